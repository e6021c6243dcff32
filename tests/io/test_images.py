import numpy as np
import pytest
from PIL import Image

from ganinv_core.io import images
from ganinv_core.io.images import ImageError


def grad(h, w):
    y, x = np.mgrid[:h, :w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], -1).astype(np.uint8)


def test_exif_orientation_is_applied(tmp_path):
    a = grad(20, 40)
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(tmp_path / 'r.jpg', exif=exif, quality=100)
    out = images.read_image(tmp_path / 'r.jpg')
    assert out.shape == (40, 20, 3)
    ref = np.rot90(a, -1)
    assert np.abs(out.astype(int) - ref).mean() < 6


def test_16bit_png_and_transparent_palette(tmp_path):
    g = grad(16, 16)[..., 0]
    Image.fromarray(g.astype(np.uint16) * 257).save(tmp_path / 'g16.png')
    np.testing.assert_array_equal(images.read_image(tmp_path / 'g16.png')[..., 1], g)
    p = Image.fromarray(g).convert('P')
    p.info['transparency'] = int(np.asarray(p)[0, 0])  # palette index of pixel (0, 0) is transparent
    p.save(tmp_path / 'p.png', transparency=p.info['transparency'])
    out = images.read_image(tmp_path / 'p.png')
    assert (out[0, 0] == 255).all() and out.shape == (16, 16, 3)  # composited over white


@pytest.mark.parametrize('mode', ['L', 'LA', 'RGBA', 'P', 'I;16', 'CMYK', '1'])
def test_modes_become_rgb(tmp_path, mode):
    g = grad(16, 16)
    if mode == 'I;16':
        im = Image.fromarray(g[..., 0].astype(np.uint16) * 257)
        assert im.mode == 'I;16'
    else:
        im = Image.fromarray(g).convert(mode)
    path = tmp_path / ('x.tif' if mode in ('CMYK', 'I;16') else 'x.png')
    im.save(path)
    out = images.read_image(path)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    if mode == 'I;16':
        np.testing.assert_array_equal(out[..., 0], g[..., 0])  # 16-bit scaled back to 8 bits exactly
    if mode == 'L':
        assert (out[..., 0] == out[..., 1]).all()


def test_alpha_composited_over_white(tmp_path):
    a = np.zeros((4, 4, 4), np.uint8)
    Image.fromarray(a, 'RGBA').save(tmp_path / 't.png')
    assert (images.read_image(tmp_path / 't.png') == 255).all()


def test_decompression_bomb_refused(tmp_path, monkeypatch):
    Image.new('RGB', (300, 200)).save(tmp_path / 'big.png')
    with pytest.raises(ImageError, match=r'big\.png: 300x200 is larger than the limit of 10000 pixels'):
        images.read_image(tmp_path / 'big.png', max_pixels=10_000)
    monkeypatch.setattr(images, 'MAX_PIXELS', 50_000)  # the default limit is read at call time
    with pytest.raises(ImageError, match=r'300x200 is larger than the limit of 50000 pixels'):
        images.read_image(tmp_path / 'big.png')
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 20_000)  # Pillow's own check (2x its limit) is caught too
    with pytest.raises(ImageError, match=r'big\.png: larger than the limit'):
        images.read_image(tmp_path / 'big.png', max_pixels=10**9)


def test_unreadable_and_missing(tmp_path):
    (tmp_path / 'bad.png').write_bytes(b'not an image')
    with pytest.raises(ImageError, match=r'bad\.png: not an image Pillow can read'):
        images.read_image(tmp_path / 'bad.png')
    with pytest.raises(ImageError, match=r'nope\.png: no such file'):
        images.read_image(tmp_path / 'nope.png')
    Image.fromarray(grad(64, 64)).save(tmp_path / 'cut.png')
    data = (tmp_path / 'cut.png').read_bytes()
    (tmp_path / 'cut.png').write_bytes(data[:len(data) // 2])
    with pytest.raises(ImageError, match=r'cut\.png: cannot decode'):
        images.read_image(tmp_path / 'cut.png')


def test_damaged_metadata_is_read_quietly_and_a_truncation_warning_refused(tmp_path, monkeypatch):
    import warnings
    from PIL import ImageOps
    # an EXIF block cut short: Pillow warns "Corrupt EXIF data" and reads the pixels; the user sees no warning
    Image.fromarray(grad(8, 8)).save(tmp_path / 'exif.jpg', exif=b'Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert images.read_image(tmp_path / 'exif.jpg').shape == (8, 8, 3)
    # a decoder that reports a truncated read by a warning (Pillow's TIFF reader) returns a partly blank image
    real = ImageOps.exif_transpose

    def cut_short(im):
        warnings.warn('Truncated File Read', UserWarning)
        return real(im)
    monkeypatch.setattr(ImageOps, 'exif_transpose', cut_short)
    with pytest.raises(ImageError, match=r"exif\.jpg: cannot decode \(truncated: Truncated File Read\)$"):
        images.read_image(tmp_path / 'exif.jpg')


def test_centre_crop_and_lanczos():
    a = np.zeros((10, 30, 3), np.uint8)
    a[:, 10:20] = 200
    sq = images.square(a, 10)
    assert sq.shape == (10, 10, 3) and (sq == 200).all()
    assert images.square(a, 5).shape == (5, 5, 3)
    ref = np.asarray(Image.fromarray(a[:, 10:20]).resize((4, 4), Image.LANCZOS))
    np.testing.assert_array_equal(images.square(a, 4), ref)


def test_expand_targets(tmp_path):
    (tmp_path / 'd').mkdir()
    (tmp_path / 'empty').mkdir()
    for n in ('b.png', 'a.jpg', 'notes.txt'):
        (tmp_path / 'd' / n).write_bytes(b'x')
    (tmp_path / 'a.png').write_bytes(b'x')
    ts = images.expand_targets([str(tmp_path / 'd'), str(tmp_path / 'a.png'), 'seed:7',
                                str(tmp_path / 'empty'), str(tmp_path / 'missing.png')])
    assert [t.name for t in ts] == ['a', 'b', 'a-2', 'seed7', 'empty', 'missing']
    assert ts[3].seed == 7
    assert 'folder has no images' in ts[4].error and 'no such file' in ts[5].error
    assert all(t.error is None for t in ts[:4])
    bad = images.expand_targets(['seed:-1', 'seed:abc', 'seed:4294967296', 'seed:4294967295'])
    assert [t.error for t in bad[:3]] == [f'{s}: a seed must be a whole number in [0, 2**32)'
                                          for s in ('seed:-1', 'seed:abc', 'seed:4294967296')]
    assert bad[3].seed == 2 ** 32 - 1 and bad[3].error is None   # numpy's RandomState takes it


def test_mask_must_match_photo(tmp_path):
    m = np.full((20, 40), 255, np.uint8)
    m[5:15, 15:25] = 0
    Image.fromarray(m).save(tmp_path / 'm.png')
    known = images.load_mask(tmp_path / 'm.png', (20, 40), 20)
    assert known.shape == (20, 20) and known[10, 10] == 0 and known[0, 0] == 1
    with pytest.raises(ImageError, match=r'm\.png: mask is 40x20 but the photo is 30x30'):
        images.load_mask(tmp_path / 'm.png', (30, 30), 20)
    m[:, 10:30] = 0                                  # known pixels only outside the centre square the photo keeps
    Image.fromarray(m).save(tmp_path / 'edges.png')
    with pytest.raises(ImageError, match=r"edges\.png: the mask marks no pixel of the photo's centre square as known"):
        images.load_mask(tmp_path / 'edges.png', (20, 40), 20)


def test_seed_targets_and_tensors(G):
    a, w = images.render_seed(G, 3)
    b, _ = images.render_seed(G, 3)
    assert a.shape == (32, 32, 3) and np.array_equal(a, b) and w.shape == (1, G.synthesis.num_ws, G.w_dim)
    np.testing.assert_array_equal(images.to_uint8(images.to_tensor(a))[0], a)

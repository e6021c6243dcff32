"""Built-in degradations: exact values on hand-made inputs, masks, composition."""
import numpy as np
import pytest
import torch
from PIL import Image

from ganinv_core.hooks import Pipeline, get_registry
from ganinv_degradations import Blur, Downsample, Grayscale, Inpaint, Noise
from ganinv_degradations.blur import gaussian_kernel


def test_grayscale_known_image():
    x = torch.tensor([[1.0, -1.0], [0.0, 0.5]]).view(1, 1, 2, 2).repeat(1, 3, 1, 1)
    x[:, 0, 0, 0], x[:, 1, 0, 0], x[:, 2, 0, 0] = 1.0, -1.0, -1.0       # pure red pixel
    y = Grayscale()(x)
    assert y.shape == x.shape and torch.equal(y[:, 0], y[:, 2])
    assert y[0, 0, 0, 0].item() == pytest.approx(0.299 * 1 - 0.587 - 0.114)
    assert y[0, 0, 1, 1].item() == pytest.approx(0.5)                   # grey stays grey
    x = torch.tensor([[0.2, -0.6], [1.0, -0.4]]).view(1, 1, 2, 2) * torch.tensor([1.0, -0.5, 0.25]).view(1, 3, 1, 1)
    expect = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    torch.testing.assert_close(Grayscale()(x), expect.unsqueeze(1).expand(1, 3, 2, 2))


def test_inpaint_center_and_box_values():
    x = torch.full((2, 3, 10, 10), 0.5)
    d = Inpaint(mode='center', size=0.4)
    y, m = d(x), d.mask(x)
    hole = torch.zeros(10, 10, dtype=torch.bool)
    hole[3:7, 3:7] = True
    assert torch.all(y[:, :, hole] == -1) and torch.all(y[:, :, ~hole] == 0.5)
    assert m.shape == (2, 1, 10, 10) and torch.equal(m[0, 0] == 0, hole)
    mb = Inpaint(mode='box', box='0:0:0.5:0.2').mask(x)[0, 0]
    assert mb[:2, :5].sum() == 0 and mb.sum() == 90


def test_inpaint_mask_from_png(tmp_path):
    a = np.full((8, 8), 255, np.uint8)
    a[:, :3] = 0
    Image.fromarray(a).save(tmp_path / 'm.png')
    d = get_registry().build_degradation(f'inpaint:mode=file,path={tmp_path / "m.png"}')
    m = d.mask(torch.zeros(1, 3, 16, 16))[0, 0]                         # resized to the image
    assert torch.all(m[:, :6] == 0) and torch.all(m[:, 6:] == 1)


def test_inpaint_unreadable_mask_fails_at_construction(tmp_path):
    (tmp_path / 'm.png').write_text('not an image')
    with pytest.raises(ValueError, match=r"inpaint mask '.*m\.png': cannot read it as an image"):
        Inpaint(mode='file', path=str(tmp_path / 'm.png'))
    Image.fromarray(np.full((8, 8), 127, np.uint8)).save(tmp_path / 'dark.png')
    with pytest.raises(ValueError, match=r"degradation 'inpaint': path='.*dark\.png' marks no pixel as known"):
        Inpaint(mode='file', path=str(tmp_path / 'dark.png'))


def test_inpaint_strokes_seeded():
    x = torch.zeros(1, 3, 64, 64)
    m1, m2 = Inpaint(mode='strokes', seed=3).mask(x), Inpaint(mode='strokes', seed=3).mask(x)
    assert torch.equal(m1, m2) and not torch.equal(m1, Inpaint(mode='strokes', seed=4).mask(x))
    assert 0.5 < m1.mean() < 1


def test_blur_delta_gives_kernel(tmp_path):
    x = -torch.ones(1, 3, 15, 15)
    x[0, :, 7, 7] = 1
    k = gaussian_kernel(1.0, 7)
    r = np.arange(7) - 3
    ref = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / 2)             # sigma 1, written out
    np.testing.assert_allclose(k.numpy(), ref / ref.sum(), rtol=1e-6, atol=1e-7)
    assert Blur(sigma=1.0).weight.shape == (7, 7)                       # default size 2*ceil(3 sigma)+1
    torch.testing.assert_close(Blur(sigma=1.0, size=7)(x)[0, 1, 4:11, 4:11], -1 + 2 * k)
    asym = np.zeros((3, 3))
    asym[0, 1], asym[1, 1] = 3, 1                                       # non-symmetric kernel from .npy
    np.save(tmp_path / 'k.npy', asym)
    y = Blur(kernel=str(tmp_path / 'k.npy'))(x)[0, 0]
    assert y[7, 7].item() == pytest.approx(-1 + 2 * 0.25) and y[6, 7].item() == pytest.approx(-1 + 2 * 0.75)  # the kernel as laid out


def test_blur_kernel_from_image(tmp_path):
    Image.fromarray(np.full((5, 5), 7, np.uint8)).save(tmp_path / 'k.png')
    d = get_registry().build_degradation(f'blur:kernel={tmp_path / "k.png"}')
    torch.testing.assert_close(d.weight, torch.full((5, 5), 1 / 25))


def png_claiming(path, width, height):
    """A 1x1 grey PNG whose header (IHDR, with a valid CRC) claims ``width`` x ``height``: decoding it would fail,
    so an error about its size shows the size was checked first."""
    import io
    import zlib
    buf = io.BytesIO()
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(buf, 'PNG')
    data = bytearray(buf.getvalue())
    assert data[12:16] == b'IHDR'
    data[16:24] = width.to_bytes(4, 'big') + height.to_bytes(4, 'big')
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, 'big')
    path.write_bytes(bytes(data))


@pytest.mark.parametrize('spec, message', [
    ('blur:sigma=0', "degradation 'blur': sigma=0.0 must be > 0"),
    ('blur:sigma=nan', "degradation 'blur': sigma='nan' is not a finite number"),
    ('blur:sigma=1e999', "degradation 'blur': sigma='1e999' is not a finite number"),      # was an OverflowError
    ('blur:sigma=171', "degradation 'blur': sigma=171.0 gives a 1027-pixel kernel; at most 1025"),
    ('blur:sigma=1e11', "degradation 'blur': sigma=100000000000.0 gives a 600000000001-pixel kernel"),  # was 4.8 TB
    ('blur:size=2001', "degradation 'blur': size=2001 must be in [0, 1025]"),
    ('blur:kernel={tmp}/wide.npy', "blur kernel '{tmp}/wide.npy': 1100x3 is larger than 1025 pixels a side"),
    ('blur:kernel={tmp}/huge.npy', "blur kernel '{tmp}/huge.npy': 30000x30000 is larger than 1025"),  # header only
    ('blur:kernel={tmp}/tall.png', "blur kernel '{tmp}/tall.png': 3x2000 is larger than 1025"),  # never decoded
    ('blur:kernel={tmp}/bomb.png', "blur kernel '{tmp}/bomb.png': larger than 1025 pixels a side (Image size"),
    ('blur:kernel={tmp}/none.npy', "degradation 'blur': kernel='{tmp}/none.npy' is not a file"),
    ('blur:kernel={tmp}/text.npy', "blur kernel '{tmp}/text.npy': cannot read it ("),
    ('blur:kernel={tmp}/archive.npy', "blur kernel '{tmp}/archive.npy': cannot read it ("),   # an .npz inside
    ('blur:kernel={tmp}/cut.npy', "blur kernel '{tmp}/cut.npy': cannot read it ("),
    ('blur:kernel={tmp}/neg.npy', "blur kernel '{tmp}/neg.npy': need a finite, non-negative 2-D array with a "
                                  'positive sum'),
    ('blur:kernel={tmp}/flat.npy', "blur kernel '{tmp}/flat.npy': need a finite, non-negative 2-D array"),
    ('downsample:factor=1', "degradation 'downsample': factor=1 must be in [2, 32]"),
    ('downsample:factor=33', "degradation 'downsample': factor=33 must be in [2, 32]"),
    ('inpaint:mode=box,box=0.5:0.1:0.2:0.9', "degradation 'inpaint': box='0.5:0.1:0.2:0.9' must be x0:y0:x1:y1 "
                                             'with 0 <= x0 < x1 <= 1'),
    ('inpaint:mode=box,box=a:b:c:d', "degradation 'inpaint': box='a:b:c:d' must be x0:y0:x1:y1"),
    ('inpaint:mode=center,size=1.5', "degradation 'inpaint': size=1.5 must be in (0, 1]"),
    ('noise:sigma=-0.1', "degradation 'noise': sigma=-0.1 must be >= 0"),
    ('noise:seed=-5', "degradation 'noise': seed=-5 must be in [0, 4294967295]"),
    ('noise:seed=4294967296', "degradation 'noise': seed=4294967296 must be in [0, 4294967295]"),
    ('inpaint:mode=strokes,seed=-1', "degradation 'inpaint': seed=-1 must be in [0, 4294967295]"),  # was numpy's
    ('inpaint:mode=strokes,strokes=100000000', "degradation 'inpaint': strokes=100000000 must be in [0, 256]"),  # hung
])
def test_bad_parameters_are_refused_by_name(tmp_path, spec, message):
    """Each check of the built-in degradations: a one-line error naming the plugin, the parameter and its value."""
    np.save(tmp_path / 'neg.npy', np.array([[1.0, -0.5], [0.2, 0.3]]))
    np.save(tmp_path / 'flat.npy', np.ones(4))
    np.save(tmp_path / 'wide.npy', np.ones((3, 1100)))
    (tmp_path / 'text.npy').write_text('not numpy')
    np.savez(tmp_path / 'archive.npz', k=np.ones((3, 3)))
    (tmp_path / 'archive.npz').rename(tmp_path / 'archive.npy')
    np.save(tmp_path / 'cut.npy', np.ones((9, 9)))
    (tmp_path / 'cut.npy').write_bytes((tmp_path / 'cut.npy').read_bytes()[:150])
    with open(tmp_path / 'huge.npy', 'wb') as f:   # a 7 GB array's header, and no data
        np.lib.format.write_array_header_1_0(f, {'descr': '<f8', 'fortran_order': False, 'shape': (30000, 30000)})
    png_claiming(tmp_path / 'tall.png', 3, 2000)
    png_claiming(tmp_path / 'bomb.png', 100000, 100000)
    with pytest.raises(ValueError) as e:
        get_registry().build_degradation(spec.format(tmp=tmp_path))
    assert str(e.value).startswith(message.format(tmp=tmp_path)) and '\n' not in str(e.value), str(e.value)


@pytest.mark.parametrize('method', ['area', 'bicubic'])
def test_downsample_constant(method):
    x = torch.full((2, 3, 32, 32), 0.3)
    d = Downsample(factor=8, method=method)
    y = d(x)
    assert y.shape == (2, 3, 4, 4) and d.output_size(32) == 4
    torch.testing.assert_close(y, torch.full_like(y, 0.3))


def test_downsample_area_is_box_mean():
    x = torch.arange(16.0).view(1, 1, 4, 4) / 16
    torch.testing.assert_close(Downsample(factor=2)(x)[0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]) / 16)


def test_noise_simulate_only_and_seeded():
    x = torch.zeros(2, 3, 8, 8)
    d = Noise(sigma=25.5, seed=1)
    y = d(x)
    assert Noise.simulate_only and torch.equal(y, Noise(sigma=25.5, seed=1)(x))
    assert abs(y.std().item() - 0.2) < 0.03                              # 25.5 / 255 * 2
    pipe = Pipeline([d])
    assert torch.equal(pipe(x), x) and torch.equal(pipe.simulate(x), y)
    # a key (ganinv-run: each target's name) gives each target its own noise, the same every time
    a, b = pipe.simulate(x, 1), pipe.simulate(x, 2)
    assert torch.equal(a, pipe.simulate(x, 1)) and not torch.equal(a, b) and not torch.equal(a, y)
    assert abs(b.std().item() - 0.2) < 0.03 and abs(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]) < 0.1


def test_pipeline_composes_in_order_and_carries_the_mask():
    reg = get_registry()
    pipe = Pipeline([reg.build_degradation(s) for s in ('inpaint:mode=box,box=0:0:0.5:0.5', 'blur:sigma=1,size=3',
                                                         'downsample:factor=2', 'grayscale')])
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    ref = Grayscale()(Downsample(factor=2)(Blur(sigma=1.0, size=3)(Inpaint(mode='box', box='0:0:0.5:0.5')(x))))
    torch.testing.assert_close(pipe(x), ref)
    assert pipe.output_size(16) == 8
    m = pipe.mask(x)
    # hole 0..7 in 16px, eroded by the 3x3 blur to 0..8, then area-downsampled: rows/cols 0..4 unknown
    expect = torch.ones(8, 8)
    expect[:5, :5] = 0
    assert m.shape == (2, 1, 8, 8) and torch.equal(m[1, 0], expect)

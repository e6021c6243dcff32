import json
import re

import numpy as np
import pytest
from PIL import Image

from ganinv_core.io import outputs, plots, video
from ganinv_core.io.latents import LatentFileError, load_latent, save_latent


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    outputs.write_bytes(tmp_path / 'a.txt', b'old')
    with pytest.raises(KeyboardInterrupt):
        with outputs.atomic_path(tmp_path / 'a.txt') as tmp:
            tmp.write_bytes(b'half')
            raise KeyboardInterrupt
    assert (tmp_path / 'a.txt').read_bytes() == b'old'
    assert [p.name for p in tmp_path.iterdir()] == ['a.txt']


def test_target_folder_is_all_or_nothing(tmp_path):
    with outputs.target_folder(tmp_path, 't') as d:
        outputs.write_bytes(d / 'x', b'1')
    assert (tmp_path / 't' / 'x').read_bytes() == b'1'
    with pytest.raises(KeyboardInterrupt):
        with outputs.target_folder(tmp_path, 't') as d:
            outputs.write_bytes(d / 'x', b'2')
            raise KeyboardInterrupt
    assert (tmp_path / 't' / 'x').read_bytes() == b'1'
    with outputs.target_folder(tmp_path, 't') as d:
        outputs.write_bytes(d / 'y', b'3')
    assert sorted(p.name for p in (tmp_path / 't').iterdir()) == ['y']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['t']


def test_check_free(tmp_path):
    outputs.check_free(tmp_path / 'new', ['a'], overwrite=False)
    (tmp_path / 'a').mkdir()
    with pytest.raises(outputs.OutputExistsError, match=r'a: already exists; pass --overwrite'):
        outputs.check_free(tmp_path, ['a', 'b'], overwrite=False)
    outputs.check_free(tmp_path, ['a'], overwrite=True)
    (tmp_path / 'file').write_text('')
    with pytest.raises(outputs.OutputExistsError, match=rf'^{tmp_path}/file/out/deeper: cannot be created: '
                                                       rf'{tmp_path}/file is not a folder$'):
        outputs.check_free(tmp_path / 'file' / 'out' / 'deeper', ['a'], overwrite=True)


def test_json_is_strict(tmp_path):
    outputs.write_json(tmp_path / 'm.json', {'psnr': float('inf'), 'x': [np.float32(1.5), float('nan')]})
    assert json.loads((tmp_path / 'm.json').read_text()) == {'psnr': 'inf', 'x': [1.5, 'nan']}


def test_plots_decode(tmp_path):
    plots.loss_plot({'mse': np.linspace(1, 0.1, 20), 'total': np.linspace(1.1, 0.2, 20)}, tmp_path / 'l.png')
    a = np.zeros((32, 32, 3), np.uint8)
    plots.comparison([('original', a), ('degraded', a[:8, :8]), ('restored', a + 255)], tmp_path / 'c.png')
    for n in ('l.png', 'c.png'):
        with Image.open(tmp_path / n) as im:
            im.load()
            assert im.width > 200 and im.height > 100


def test_video_frames(tmp_path):
    """Frames are encoded as they come into a hidden temporary file, moved into place by write; none: no file;
    close drops an unfinished video."""
    pytest.importorskip('imageio_ffmpeg')
    w = video.VideoWriter(tmp_path, fps=5)
    w.write(tmp_path / 'none.mp4')  # no frames: no file
    for k in range(6):
        w.append(np.full((31, 47, 3), 40 * k, np.uint8))  # odd sides are padded for yuv420p
    assert w.count == 6 and [p.name[:10] for p in tmp_path.iterdir()] == ['.progress-']   # encoding as it goes
    with pytest.raises(ValueError, match=r'video: frame \(30, 47\) differs from the first one \(31, 47\)'):
        w.append(np.zeros((30, 47, 3), np.uint8))
    w.write(tmp_path / 'v.mp4')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['v.mp4']
    import imageio.v2 as imageio
    r = imageio.get_reader(tmp_path / 'v.mp4', format='FFMPEG')
    assert r.count_frames() == 6
    frames = [r.get_data(i) for i in range(6)]
    r.close()
    assert frames[0].shape == (32, 48, 3)
    assert abs(int(frames[5][:31, :47].mean()) - 200) < 8
    dropped = video.VideoWriter(tmp_path)
    dropped.append(frames[0])
    dropped.close()                                    # an interrupted run: its temporary file goes
    assert sorted(p.name for p in tmp_path.iterdir()) == ['v.mp4']


def test_latent_roundtrip_and_errors(tmp_path):
    w = np.random.rand(1, 8, 16).astype(np.float32)
    noise = {'b4.conv1': np.random.rand(1, 1, 4, 4).astype(np.float32)}
    save_latent(tmp_path / 'p.npz', w, noise, 'w+')
    got = load_latent(tmp_path / 'p.npz')
    np.testing.assert_array_equal(got['w'], w)
    np.testing.assert_array_equal(got['noise']['b4.conv1'], noise['b4.conv1'])
    np.savez(tmp_path / 'nvidia.npz', w=w)  # NVIDIA's projector writes only 'w'
    assert load_latent(tmp_path / 'nvidia.npz')['noise'] == {}
    np.savez(tmp_path / 'other.npz', z=w)
    with pytest.raises(LatentFileError, match=r'other\.npz: no array "w"'):
        load_latent(tmp_path / 'other.npz')
    (tmp_path / 'junk.npz').write_bytes(b'junk')
    (tmp_path / 'zip.npz').write_bytes(b'PK\x03\x04' + bytes(40))                     # a zip's magic, no zip
    (tmp_path / 'cut.npz').write_bytes((tmp_path / 'p.npz').read_bytes()[:200])
    np.save(tmp_path / 'w.npy', w)
    (tmp_path / 'w.npy').rename(tmp_path / 'flat.npz')                                    # one array, no archive
    for name in ('junk.npz', 'zip.npz', 'cut.npz'):
        with pytest.raises(LatentFileError, match=re.escape(name) + r': not a readable \.npz \(\w+'):
            load_latent(tmp_path / name)
    with pytest.raises(LatentFileError, match=r'flat\.npz: a single array \(\.npy format\), not an \.npz archive'):
        load_latent(tmp_path / 'flat.npz')


def test_heat_map_runs_from_black_to_pale_yellow():
    from ganinv_core.io.plots import heat
    rgb = heat(np.array([[0.0, 5.0], [10.0, 20.0]]), vmax=10.0)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].max() < 10 and rgb[1, 0].min() > 180   # magma's ends: near black, pale yellow
    assert (rgb[1, 1] == rgb[1, 0]).all()                  # clipped at vmax
    assert heat(np.zeros((2, 2))).max() < 10               # an all-zero map stays dark (no division by zero)

"""`ganinv-run --align` end to end with the built-in dlib detector: on a real photo (skimage's astronaut) beside a
photo with no face, and without the [align] extra."""
import json
import sys

import numpy as np
import pytest
from ganinv_dlib import _detector
from PIL import Image

from ganinv_core import cli
from ganinv_core.io._ffhq import crop_to_photo, ffhq_quad

BASE = ['--network', 'random-32', '--steps', '2', '--quiet', '--align']


def test_align_without_dlib_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, 'dlib', None)  # `import dlib` raises ImportError, as without the extra
    _detector._load.cache_clear()
    try:
        Image.new('RGB', (48, 40), (90, 120, 150)).save(tmp_path / 'p.png')
        code = cli.main([*BASE, '--target', str(tmp_path / 'p.png'), '--outdir', str(tmp_path / 'o')])
    finally:
        _detector._load.cache_clear()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == cli.EXIT_BAD_INPUT
    assert len(err) == 1 and str(tmp_path / 'p.png') in err[0] and "pip install -e '.[align]'" in err[0], err


def test_align_restore_paste_back_on_astronaut_after_a_photo_without_face(tmp_path, capsys):
    pytest.importorskip('dlib', reason="the [align] extra (dlib-bin) is not installed")
    skdata = pytest.importorskip('skimage.data')
    photo = skdata.astronaut()                                   # 512x512 RGB, one face
    Image.fromarray(photo).save(tmp_path / 'astronaut.png')
    Image.new('RGB', (120, 90), (128, 128, 128)).save(tmp_path / 'blank.png')
    code = cli.main([*BASE, '--target', str(tmp_path / 'blank.png'), str(tmp_path / 'astronaut.png'),
                     '--outdir', str(tmp_path / 'out')])
    err = capsys.readouterr().err
    # the photo without a face is reported (one line, named) and the batch goes on with the astronaut
    assert code == cli.EXIT_BAD_INPUT, err
    assert f"{tmp_path / 'blank.png'}: photo: no face found by detector 'dlib'" in err
    run = json.loads((tmp_path / 'out' / 'run.json').read_text())
    assert run['targets']['blank']['status'] == 'bad input' and run['targets']['astronaut']['status'] == 'ok'
    assert not (tmp_path / 'out' / 'blank').exists()

    d = tmp_path / 'out' / 'astronaut'
    with Image.open(d / 'pasted.png') as im:
        pasted = np.asarray(im.convert('RGB'))
    assert pasted.shape == photo.shape
    # landmarks and transform are saved: dlib's landmarks of the photo, and the FFHQ crop of them at 32 px
    info = json.loads((d / 'alignment.json').read_text())
    assert json.loads((d / 'metrics.json').read_text())['alignment'] == 'alignment.json'
    lm = np.asarray(info['landmarks'])
    np.testing.assert_allclose(lm, _detector.DlibDetector().detect(photo)[0])
    assert info['size'] == 32
    np.testing.assert_allclose(info['transform'], crop_to_photo(ffhq_quad(lm)[0], 32), atol=1e-9)
    # Far from the face the photo is untouched; the face region was replaced by the (random) restoration.
    x0, y0 = lm.min(0).astype(int)
    x1, y1 = lm.max(0).astype(int)
    assert np.array_equal(pasted[:40, -40:], photo[:40, -40:])
    face = (slice(y0, y1), slice(x0, x1))
    assert np.abs(pasted[face].astype(int) - photo[face]).mean() > 5


def test_a_video_s_face_is_tracked_restored_and_pasted_back_into_every_frame(tmp_path, capsys):
    """The astronaut panning right by 4 px a frame (H.264): every frame's face found, aligned from landmarks
    smoothed in time (the crop moves with the face, without dlib's jitter), restored, and pasted back; the whole
    frames become NAME_pasted.mp4."""
    pytest.importorskip('dlib', reason="the [align] extra (dlib-bin) is not installed")
    skdata = pytest.importorskip('skimage.data')
    import imageio.v2 as imageio
    from ganinv_core.io.align import track
    from ganinv_core.io.video import read_frames
    photo = np.asarray(Image.fromarray(skdata.astronaut()).resize((256, 256), Image.LANCZOS))
    w = imageio.get_writer(str(tmp_path / 'pan.mp4'), format='FFMPEG', fps=4, codec='libx264', quality=10,
                           macro_block_size=1, ffmpeg_log_level='error')
    for t in range(4):
        w.append_data(np.roll(photo, 4 * t, axis=1))
    w.close()
    code = cli.main([*BASE, '--target', str(tmp_path / 'pan.mp4'), '--outdir', str(tmp_path / 'out')])
    assert code == 0, capsys.readouterr().err
    out = tmp_path / 'out'
    frames, _ = read_frames(tmp_path / 'pan.mp4')
    found = [_detector.DlibDetector().detect(f)[0] for f in frames]
    for k in range(4):   # each frame's crop comes from the tracked (smoothed) landmarks of the detections
        info = json.loads((out / f'pan_f{k:04d}' / 'alignment.json').read_text())
        np.testing.assert_allclose(info['landmarks'], track(found)[k], atol=1e-6)
    xs = [np.asarray(json.loads((out / f'pan_f{k:04d}' / 'alignment.json').read_text())['quad'])[:, 0].mean()
          for k in range(4)]
    assert np.allclose(np.diff(xs), 4, atol=1.0), xs          # the crop follows the pan
    pasted, _ = read_frames(out / 'pan_pasted.mp4')
    assert len(pasted) == 4 and pasted[0].shape == (256, 256, 3)
    rj = json.loads((out / 'run.json').read_text())
    assert rj['videos']['pan']['pasted'] == 'pan_pasted.mp4' and rj['videos']['pan']['frames'] == 4


def test_a_video_follows_the_largest_face_or_all_faces_only(tmp_path, capsys):
    pytest.importorskip('dlib', reason="the [align] extra (dlib-bin) is not installed")
    import imageio.v2 as imageio
    w = imageio.get_writer(str(tmp_path / 'v.mp4'), format='FFMPEG', fps=4, codec='libx264', macro_block_size=1,
                           ffmpeg_log_level='error')
    for _ in range(2):
        w.append_data(np.zeros((32, 32, 3), np.uint8))
    w.close()
    code = cli.main([*BASE, '--target', str(tmp_path / 'v.mp4'), '--face', '0', '--outdir', str(tmp_path / 'o')])
    assert code == 2 and '--face 0 works on photos only' in capsys.readouterr().err
    for face in ('largest', 'all'):
        code = cli.main([*BASE, '--target', str(tmp_path / 'v.mp4'), '--face', face, '--outdir', str(tmp_path / face)])
        assert code == 2 and f"{tmp_path / 'v.mp4'}: video: no face found in any of its 2 frames" in \
            capsys.readouterr().err


def test_every_face_of_a_video_is_followed_restored_and_pasted_back(tmp_path, capsys):
    """--face all on two astronauts side by side, panning: each face is followed through the frames into its own
    frame folders and videos (NAME_face0.mp4, NAME_face1.mp4), and NAME_pasted.mp4 has both pasted into every frame;
    --resume assembles it again from the frames on disk."""
    pytest.importorskip('dlib', reason="the [align] extra (dlib-bin) is not installed")
    skdata = pytest.importorskip('skimage.data')
    import imageio.v2 as imageio
    from ganinv_core.io.align import AlignedFace, paste_back
    from ganinv_core.io.video import read_frames
    one = np.asarray(Image.fromarray(skdata.astronaut()).resize((192, 192), Image.LANCZOS))
    pair = np.concatenate([one, one[:, ::-1]], axis=1)                    # 192 x 384, two faces
    w = imageio.get_writer(str(tmp_path / 'two.mp4'), format='FFMPEG', fps=4, codec='libx264', quality=10,
                           macro_block_size=1, ffmpeg_log_level='error')
    for t in range(3):
        w.append_data(np.roll(pair, 3 * t, axis=1))
    w.close()
    args = [*BASE, '--target', str(tmp_path / 'two.mp4'), '--face', 'all', '--outdir', str(tmp_path / 'out')]
    assert cli.main(args) == 0, capsys.readouterr().err
    out = tmp_path / 'out'
    rj = json.loads((out / 'run.json').read_text())
    assert sorted(rj['targets']) == [f'two_face{i}_f{k:04d}' for i in range(2) for k in range(3)]
    assert rj['videos']['two'] == {'frames': 3, 'fps': 4.0, 'faces': ['two_face0', 'two_face1'],
                                   'pasted': 'two_pasted.mp4'}
    for i in range(2):
        entry = rj['videos'][f'two_face{i}']
        assert entry['video'] == f'two_face{i}.mp4' and 'pasted' not in entry
        assert not (out / f'two_face{i}_pasted.mp4').exists()
    xs = [np.asarray(json.loads((out / f'two_face{i}_f0000' / 'alignment.json').read_text())['quad'])[:, 0].mean()
          for i in range(2)]
    assert xs[0] < 192 < xs[1]                                             # face 0 is the left one
    frames, _ = read_frames(tmp_path / 'two.mp4')
    pasted, _ = read_frames(out / 'two_pasted.mp4')
    assert len(pasted) == 3 and pasted[0].shape == (192, 384, 3)
    want = frames[2]
    for i in range(2):
        d = out / f'two_face{i}_f0002'
        want = paste_back(want, np.asarray(Image.open(d / 'restored.png').convert('RGB')),
                          AlignedFace.from_json(json.loads((d / 'alignment.json').read_text())))
    assert np.abs(pasted[2].astype(int) - want).mean() < 3                 # both faces in (H.264 aside)
    assert np.abs(want.astype(int) - frames[2]).mean() > 3
    (out / 'two_pasted.mp4').unlink()
    assert cli.main([*args, '--resume']) == 0 and len(read_frames(out / 'two_pasted.mp4')[0]) == 3

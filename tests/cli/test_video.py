"""ganinv-run on video targets: frames restored in order, each from the previous frame's latent; the videos written."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ganinv_core import cli
from ganinv_core.io.images import to_uint8
from ganinv_core.io.latents import load_latent
from ganinv_core.io.video import read_frames

BASE = ['--network', 'random-32', '--steps', '8', '--quiet']


def run(args, capsys):
    code = cli.main([*BASE, *map(str, args)])
    return code, capsys.readouterr()


def clip(path, frames: int, seed: int = 1):
    """A short H.264 video of the random network's images, its latent drifting from one z to another."""
    import imageio.v2 as imageio
    from ganinv_core.weights import load_generator
    G = load_generator('random-32')
    g = torch.Generator().manual_seed(seed)
    z0, z1 = torch.randn(1, G.z_dim, generator=g), torch.randn(1, G.z_dim, generator=g)
    w = imageio.get_writer(str(path), format='FFMPEG', fps=5, codec='libx264', macro_block_size=1, quality=10,
                           ffmpeg_log_level='error')
    with torch.no_grad():
        for t in range(frames):
            w.append_data(to_uint8(G.synthesis(G.mapping(z0 + (z1 - z0) * t / 8, None), noise_mode='const'))[0])
    w.close()
    return path


def spy_invert(monkeypatch) -> list:
    """Every invert() call: its steps, lr, losses, number of targets, and the init latent it was given."""
    import ganinv_core.engine as engine
    real, calls = engine.invert, []

    def spy(G, targets, **k):
        calls.append(dict(steps=k['steps'], lr=k['lr'], losses=k['losses'], n=len(targets),
                          init=None if k['init'] is None else np.array(k['init']['w'])))
        return real(G, targets, **k)
    monkeypatch.setattr(engine, 'invert', spy)
    return calls


def test_frames_are_restored_in_order_each_from_the_previous_one(tmp_path, capsys, monkeypatch):
    source = clip(tmp_path / 'clip.mp4', 4)
    calls = spy_invert(monkeypatch)
    code, out = run(['--target', source, '--simulate', '--degradation', 'grayscale', '--batch-size', '4',
                     '--outdir', tmp_path / 'o'], capsys)
    assert code == 0, out.err
    o = tmp_path / 'o'
    names = [f'clip_f{k:04d}' for k in range(4)]
    assert [c['n'] for c in calls] == [1, 1, 1, 1]            # one frame at a time: each waits for the one before
    assert calls[0]['steps'] == 8 and calls[0]['init'] is None and calls[0]['lr'] == 0.1
    for k in range(1, 4):   # later frames: a quarter of the steps, a quarter of the rate, from the previous latent
        c = calls[k]
        assert c['steps'] == 2 and c['lr'] == pytest.approx(0.025) and c['losses'][-1] == 'init-dist:weight=0.01'
        np.testing.assert_array_equal(c['init'], load_latent(o / names[k - 1] / 'projected_w.npz')['w'])
    rj = json.loads((o / 'run.json').read_text())
    assert list(rj['targets']) == names and all(v['status'] == 'ok' for v in rj['targets'].values())
    info = rj['videos']['clip']
    assert info['frames'] == 4 and info['fps'] == 5 and set(info['flicker']) == {'input', 'restored'}
    assert rj['config']['frame-steps'] == 2 and rj['config']['frame-lr'] == 0.025
    video, fps = read_frames(o / 'clip.mp4')
    both, _ = read_frames(o / 'clip_comparison.mp4')
    assert len(video) == len(both) == 4 and fps == 5 and video[0].shape == (32, 32, 3) and both[0].shape == (32, 64, 3)
    luma = [np.asarray(Image.open(o / names[2] / f).convert('RGB')) @ np.array([0.299, 0.587, 0.114])
            for f in ('composite.png', 'restored.png')]
    off = [np.abs(video[2] @ np.array([0.299, 0.587, 0.114]) - y).mean() for y in luma]
    assert off[0] < 2 < off[1], off   # the video shows the composites (compared in luminance: H.264 halves chroma)
    assert sum(line.startswith('clip_f') for line in out.out.splitlines()) == 4


def test_frames_of_several_videos_share_batches(tmp_path, capsys, monkeypatch):
    a, b = clip(tmp_path / 'a.mp4', 3, seed=1), clip(tmp_path / 'b.mp4', 2, seed=2)
    calls = spy_invert(monkeypatch)
    code, out = run(['--target', a, b, '--batch-size', '4', '--outdir', tmp_path / 'o'], capsys)
    assert code == 0, out.err
    assert [(c['n'], c['init'] is None) for c in calls] == [(2, True), (2, False), (1, False)]
    rj = json.loads((tmp_path / 'o' / 'run.json').read_text())
    assert sorted(rj['videos']) == ['a', 'b'] and rj['videos']['a']['frames'] == 3


def test_the_temporal_weight_holds_a_frame_near_the_previous_one(tmp_path, capsys):
    """init-dist at --temporal: far heavier, the latents of consecutive frames stay closer together."""
    source = clip(tmp_path / 'clip.mp4', 3)

    def steps_between(flag):
        out = tmp_path / flag
        code, o = run(['--target', source, '--temporal', flag, '--frame-steps', '8', '--frame-lr', '0.1',
                       '--outdir', out], capsys)
        assert code == 0, o.err
        ws = [load_latent(out / f'clip_f{k:04d}' / 'projected_w.npz')['w'] for k in range(3)]
        return [float(np.linalg.norm(ws[k] - ws[k - 1])) for k in (1, 2)]
    free, held = steps_between('0'), steps_between('1000')
    assert all(h < f / 3 for h, f in zip(held, free)), (held, free)


def test_an_interrupted_video_resumes_from_the_last_frame_on_disk(tmp_path, capsys, monkeypatch):
    import ganinv_core.engine as engine
    source = clip(tmp_path / 'clip.mp4', 3)
    real, calls = engine.invert, []

    def interrupted(*a, **k):   # Ctrl-C in the second frame
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(engine, 'invert', interrupted)
    o = tmp_path / 'o'
    args = ['--target', source, '--outdir', o]
    assert run(args, capsys)[0] == 130 and not (o / 'clip.mp4').exists()
    monkeypatch.undo()
    calls = spy_invert(monkeypatch)
    code, out = run([*args, '--resume'], capsys)
    assert code == 0, out.err
    assert len(calls) == 2 and calls[0]['steps'] == 2   # frames 1 and 2; frame 1 from frame 0's latent, on disk
    np.testing.assert_array_equal(calls[0]['init'], load_latent(o / 'clip_f0000' / 'projected_w.npz')['w'])
    rj = json.loads((o / 'run.json').read_text())
    assert rj['videos']['clip']['frames'] == 3 and len(read_frames(o / 'clip.mp4')[0]) == 3


def test_bad_video_targets_are_one_line_each(tmp_path, capsys):
    (tmp_path / 'broken.mp4').write_bytes(b'not a video')
    code, out = run(['--target', tmp_path / 'broken.mp4', '--outdir', tmp_path / 'o'], capsys)
    assert code == 2 and out.err.startswith(f'error: {tmp_path / "broken.mp4"}: cannot read the video (')
    source = clip(tmp_path / 'clip.mp4', 2)
    code, out = run(['--target', source, '--align', '--face', '1', '--outdir', tmp_path / 'a'], capsys)
    assert code == 2 and f'{source}: --align follows the largest face or all faces through a video; --face 1 ' \
                         'works on photos only' in out.err
    assert run(['--target', source, '--outdir', tmp_path / 'v'], capsys)[0] == 0
    before = (tmp_path / 'v' / 'clip.mp4').read_bytes()
    code, out = run(['--target', source, '--outdir', tmp_path / 'v'], capsys)
    assert code == 2 and 'already exists; pass --overwrite' in out.err
    assert (tmp_path / 'v' / 'clip.mp4').read_bytes() == before


def test_a_video_that_cannot_be_assembled_keeps_its_frames_and_says_so(tmp_path, capsys, monkeypatch):
    """The frames are restored and kept; the missing video is one error line, run.json names it, the exit code is
    1 (this failed with a KeyError when it was the run's first video: run.json had no 'videos' yet)."""
    source = clip(tmp_path / 'clip.mp4', 2)

    def full_disk(*a, **k):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(cli, '_write_video', full_disk)
    code, out = run(['--target', source, '--outdir', tmp_path / 'o'], capsys)
    assert code == 1 and (tmp_path / 'o' / 'clip_f0001' / 'restored.png').is_file()
    assert out.err.strip() == 'error: clip: its 2 frames are restored, but the video could not be written ' \
                              '(OSError: [Errno 28] No space left on device)'
    rj = json.loads((tmp_path / 'o' / 'run.json').read_text())
    assert rj['videos']['clip'] == {'frames': 2, 'error': 'OSError: [Errno 28] No space left on device'}

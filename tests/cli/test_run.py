"""End-to-end tests of ganinv-run on the tiny random-32 generator (a few steps each)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganinv_core import cli
from ganinv_core.io.latents import load_latent, render_latent
from ganinv_core.io.images import to_uint8

FILES = ['target.png', 'degraded.png', 'restored.png', 'comparison.png', 'projected_w.npz', 'loss.png',
         'metrics.json']
BASE = ['--network', 'random-32', '--steps', '3', '--quiet']


def run(args, capsys=None):
    code = cli.main([*BASE, *map(str, args)])
    out = capsys.readouterr() if capsys else None
    return code, out


def png(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert('RGB'))


def photo(path, size=(40, 30), seed=0):
    a = np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), np.uint8)
    Image.fromarray(a).save(path)
    return path


def check_outputs(d: Path, G=None):
    assert sorted(p.name for p in d.iterdir() if p.name in FILES) == sorted(FILES)
    for f in FILES:
        if f.endswith('.png'):
            assert png(d / f).size > 0
    m = json.loads((d / 'metrics.json').read_text())
    assert set(m['loss']) >= {'total'} and m['steps'] == 3 and m['steps_per_second'] > 0
    if G is not None:  # projected_w.npz re-renders restored.png within 1/255
        again = to_uint8(render_latent(G, load_latent(d / 'projected_w.npz')))[0]
        assert np.abs(again.astype(int) - png(d / 'restored.png')).max() <= 1
    return m


@pytest.mark.parametrize('spec', ['grayscale', 'inpaint:mode=center,size=0.4', 'blur:sigma=1.5',
                                  'downsample:factor=4', 'noise:sigma=20'])
def test_simulation_each_degradation(tmp_path, capsys, G, spec):
    code, out = run(['--target', 'seed:3', '--simulate', '--degradation', spec, '--outdir', tmp_path], capsys)
    assert code == 0, out.err
    m = check_outputs(tmp_path / 'seed3', G)
    assert m['mode'] == 'simulate' and 'vs_clean' in m and 'degraded_vs_clean' in m
    assert 'PSNR before' in out.out and str(tmp_path / 'seed3') in out.out
    run_json = json.loads((tmp_path / 'run.json').read_text())
    assert run_json['status'] == 'done' and run_json['config']['degradation'] == [spec]
    assert run_json['versions']['torch'] == torch.__version__ and run_json['targets']['seed3']['status'] == 'ok'
    if spec.startswith('downsample'):
        assert png(tmp_path / 'seed3' / 'degraded.png').shape == (8, 8, 3)


def test_restoration_of_a_file_w_plus(tmp_path, capsys, G):
    photo(tmp_path / 'old.png')
    code, out = run(['--target', tmp_path / 'old.png', '--degradation', 'grayscale', '--latent-space', 'w+',
                     '--outdir', tmp_path / 'o'], capsys)
    assert code == 0, out.err
    m = check_outputs(tmp_path / 'o' / 'old', G)
    assert m['mode'] == 'restore' and 'vs_clean' not in m
    w = load_latent(tmp_path / 'o' / 'old' / 'projected_w.npz')['w']
    assert w.shape == (1, G.synthesis.num_ws, G.w_dim) and not np.allclose(w, w[:, :1])
    assert png(tmp_path / 'o' / 'old' / 'target.png').shape == (32, 32, 3)


def test_batch_equals_one_at_a_time(tmp_path, capsys):
    targets = ['--target', 'seed:1', 'seed:2', 'seed:4', '--simulate', '--degradation', 'grayscale']
    assert run([*targets, '--batch-size', '3', '--outdir', tmp_path / 'b'], capsys)[0] == 0
    assert run([*targets, '--batch-size', '1', '--outdir', tmp_path / 'o'], capsys)[0] == 0
    for name in ('seed1', 'seed2', 'seed4'):
        a, b = (load_latent(tmp_path / d / name / 'projected_w.npz') for d in ('b', 'o'))
        # Adam's first steps are ~lr*sign(g): float noise in near-zero gradient entries shows up at ~1e-4
        np.testing.assert_allclose(a['w'], b['w'], rtol=0, atol=2e-3)
        assert np.abs(png(tmp_path / 'b' / name / 'restored.png').astype(int)
                      - png(tmp_path / 'o' / name / 'restored.png')).max() <= 1


def test_bad_file_among_good_ones(tmp_path, capsys):
    (tmp_path / 'broken.png').write_bytes(b'garbage')
    (tmp_path / 'empty').mkdir()
    code, out = run(['--target', 'seed:1', tmp_path / 'broken.png', tmp_path / 'empty', 'seed:2',
                     '--outdir', tmp_path / 'o'], capsys)
    assert code == 2
    assert f'{tmp_path / "broken.png"}: not an image Pillow can read' in out.err
    assert f'{tmp_path / "empty"}: folder has no images' in out.err
    for name in ('seed1', 'seed2'):
        check_outputs(tmp_path / 'o' / name)
    rj = json.loads((tmp_path / 'o' / 'run.json').read_text())
    assert rj['targets']['broken']['status'] == 'bad input' and rj['status'] == 'done with errors'
    assert not (tmp_path / 'o' / 'broken').exists()


def test_mask_file(tmp_path, capsys):
    photo(tmp_path / 'p.png', (40, 30))
    m = np.full((30, 40), 255, np.uint8)
    m[10:20, 15:25] = 0
    Image.fromarray(m).save(tmp_path / 'mask.png')
    Image.fromarray(m[:20]).save(tmp_path / 'small.png')
    photo(tmp_path / 'q.png', (50, 50))
    code, out = run(['--target', tmp_path / 'p.png', tmp_path / 'q.png', '--mask', tmp_path / 'mask.png',
                     '--outdir', tmp_path / 'o'], capsys)
    assert code == 2 and f'{tmp_path / "mask.png"}: mask is 40x30 but the photo is 50x50' in out.err
    check_outputs(tmp_path / 'o' / 'p')
    assert png(tmp_path / 'o' / 'p' / 'degraded.png')[16, 16].max() == 0  # the hole, black
    code, out = run(['--target', tmp_path / 'p.png', '--mask', tmp_path / 'small.png', '--outdir', tmp_path / 'x'],
                    capsys)
    assert code == 2 and 'mask is 40x20 but the photo is 40x30' in out.err


def test_existing_outputs_are_kept(tmp_path, capsys):
    assert run(['--target', 'seed:1', '--outdir', tmp_path], capsys)[0] == 0
    before = {p: p.read_bytes() for p in tmp_path.rglob('*') if p.is_file()}
    code, out = run(['--target', 'seed:1', '--steps', '4', '--outdir', tmp_path], capsys)
    assert code == 2 and 'already exists; pass --overwrite' in out.err
    assert {p: p.read_bytes() for p in tmp_path.rglob('*') if p.is_file()} == before
    assert run(['--target', 'seed:1', '--steps', '4', '--outdir', tmp_path, '--overwrite'], capsys)[0] == 0
    assert json.loads((tmp_path / 'seed1' / 'metrics.json').read_text())['steps'] == 4


def test_ctrl_c_keeps_finished_targets(tmp_path, capsys, monkeypatch):
    import ganinv_core.engine as engine
    real, calls = engine.invert, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            k['callbacks'] = [*k['callbacks'], lambda p: (_ for _ in ()).throw(KeyboardInterrupt) if p.step else None]
        return real(*a, **k)

    monkeypatch.setattr(engine, 'invert', interrupted)
    code, out = run(['--target', 'seed:1', 'seed:2', '--batch-size', '1', '--outdir', tmp_path], capsys)
    assert code == 130 and 'interrupted' in out.err
    check_outputs(tmp_path / 'seed1')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['run.json', 'seed1']  # no partial folder or file
    assert json.loads((tmp_path / 'run.json').read_text())['status'] == 'interrupted'


def test_video_and_snapshots(tmp_path, capsys):
    code, out = run(['--target', 'seed:1', '--steps', '6', '--save-video', '--snapshots', '2,4', '--outdir', tmp_path],
                    capsys)
    assert code == 0, out.err
    d = tmp_path / 'seed1'
    assert png(d / 'step0002.png').shape == png(d / 'step0004.png').shape == (32, 32, 3)
    import imageio.v2 as imageio
    r = imageio.get_reader(d / 'progress.mp4', format='FFMPEG')
    assert r.count_frames() >= 2 and r.get_data(0).shape == (32, 64, 3)
    r.close()


def test_config_file(tmp_path, capsys):
    cfg = tmp_path / 'c.toml'
    cfg.write_text(f'network = "random-32"\ntarget = ["seed:5"]\nsimulate = true\ndegradation = ["grayscale"]\n'
                   f'steps = 2\nlatent-space = "w+"\noutdir = "{tmp_path / "o"}"\n')
    assert cli.main(['--config', str(cfg), '--quiet']) == 0
    m = json.loads((tmp_path / 'o' / 'seed5' / 'metrics.json').read_text())
    assert m['steps'] == 2 and m['mode'] == 'simulate'
    assert cli.main(['--config', str(cfg), '--quiet', '--steps', '3', '--overwrite']) == 0  # flags win
    assert json.loads((tmp_path / 'o' / 'seed5' / 'metrics.json').read_text())['steps'] == 3
    rj = json.loads((tmp_path / 'o' / 'run.json').read_text())
    assert rj['config']['latent-space'] == 'w+' and rj['config']['steps'] == 3
    capsys.readouterr()
    cfg.write_text('stpes = 3\n')
    assert cli.main(['--config', str(cfg)]) == 2
    assert f"{cfg}: unknown key 'stpes'" in capsys.readouterr().err
    cfg.write_text('steps = "many"\n')
    assert cli.main(['--config', str(cfg)]) == 2
    assert f"{cfg}: key 'steps'" in capsys.readouterr().err


@pytest.mark.parametrize('args, message', [
    (['--target', 'seed:1', '--degradation', 'noise'], "'noise': works in simulation only; add --simulate"),
    (['--target', 'seed:1', '--degradation', 'nosuch'], 'nosuch'),
    (['--target', 'seed:1', '--init', 'missing.npz'], 'missing.npz'),
    (['--target', 'seed:1', '--network', 'random-7'], 'random-7'),
    ([], '--target: give at least one'),
])
def test_bad_input_one_line(tmp_path, capsys, args, message):
    code, out = run([*args, '--outdir', tmp_path / 'o'], capsys)
    assert code == 2
    assert message in out.err and len(out.err.strip().splitlines()) == 1
    assert not (tmp_path / 'o').exists()


def test_align_without_extra_says_how_to_install(tmp_path, capsys, monkeypatch):
    photo(tmp_path / 'p.png')
    monkeypatch.setitem(sys.modules, 'ganinv_core.io.align', None)  # as if the module were absent
    code, out = run(['--target', tmp_path / 'p.png', '--align', '--outdir', tmp_path / 'o'], capsys)
    assert code == 2 and 'pip install -e .[align]' in out.err and str(tmp_path / 'p.png') in out.err


def test_list_plugins_and_doctor(capsys):
    assert cli.main(['--list-plugins']) == 0
    text = capsys.readouterr().out
    for name in ('grayscale', 'inpaint', 'blur', 'downsample', 'noise', 'vgg16', 'mse', 'latent-dist', 'noise-reg'):
        assert name in text
    assert cli.main(['--doctor']) == 0
    assert 'bias_act' in capsys.readouterr().out


def test_convert(tmp_path, capsys):
    assert cli.main(['--convert', 'random-32', str(tmp_path / 'g.safetensors')]) == 0
    from ganinv_core.weights import load_generator
    G2 = load_generator(str(tmp_path / 'g.safetensors'))
    assert G2.img_resolution == 32
    assert cli.convert_main(['random-32', str(tmp_path / 'g.safetensors')]) == 2
    assert 'g.safetensors' in capsys.readouterr().err


def test_example_plugin_listed_and_usable(tmp_path):
    """The template plugin, installed into a --target folder on PYTHONPATH, is listed and usable."""
    root = Path(__file__).resolve().parents[2]
    site = tmp_path / 'site'
    r = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation',
                        '--target', str(site), str(root / 'examples' / 'ganinv-plugin-example')],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get('PYTHONPATH', '')]),
               OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-c', 'import sys; from ganinv_core.cli import main; sys.exit(main())']
    r = subprocess.run([*cmd, '--list-plugins'], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and 'colour-response' in r.stdout and 'colour-stats' in r.stdout, r.stderr
    r = subprocess.run([*cmd, *BASE, '--steps', '2', '--target', 'seed:1', '--simulate', '--degradation',
                        'colour-response:gamma=2.0', '--outdir', str(tmp_path / 'o')],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / 'o' / 'seed1' / 'metrics.json').read_text())['mode'] == 'simulate'


class _FakeDetector:
    """Landmarks of one synthetic face per photo wider than 45 px, none otherwise."""
    name = 'fake'

    def detect(self, image):
        h, w = image.shape[:2]
        if w <= 45:
            return []
        lm = np.tile([w / 2, h / 2], (68, 1)).astype(float)
        lm[36:42] = [w * 0.38, h * 0.4] + np.random.RandomState(0).rand(6, 2)   # left eye
        lm[42:48] = [w * 0.62, h * 0.4] + np.random.RandomState(1).rand(6, 2)   # right eye
        lm[48:60] = [w * 0.5, h * 0.7] + np.random.RandomState(2).rand(12, 2)   # mouth
        lm[48], lm[54] = [w * 0.42, h * 0.7], [w * 0.58, h * 0.7]                # mouth corners
        return [lm]


def test_align_pastes_back_and_no_face_is_reported(tmp_path, capsys, monkeypatch):
    import functools
    from ganinv_core.io import align
    monkeypatch.setattr(align, 'align_faces', functools.partial(align.align_faces, detector=_FakeDetector()))
    photo(tmp_path / 'face.png', (80, 60))
    photo(tmp_path / 'noface.png', (40, 40))
    code, out = run(['--target', tmp_path / 'face.png', tmp_path / 'noface.png', '--align',
                     '--outdir', tmp_path / 'o'], capsys)
    assert code == 2 and f'{tmp_path / "noface.png"}: photo: no face found' in out.err
    d = tmp_path / 'o' / 'face'
    check_outputs(d)
    assert png(d / 'pasted.png').shape == (60, 80, 3)
    info = json.loads((d / 'alignment.json').read_text())
    assert info['size'] == 32 and len(info['landmarks']) == 68
    assert not (tmp_path / 'o' / 'noface').exists()

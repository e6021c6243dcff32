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
from ganinv_core.io.images import to_tensor, to_uint8

from _devices import DEVICES, gpu_only

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
    assert m['precision'] == 'fp32' and m['target'] == d.name
    if G is not None:  # projected_w.npz re-renders restored.png within 1/255
        again = to_uint8(render_latent(G, load_latent(d / 'projected_w.npz')))[0]
        assert np.abs(again.astype(int) - png(d / 'restored.png')).max() <= 1
    return m


@pytest.mark.parametrize('spec', ['grayscale', 'inpaint:mode=center,size=0.4', 'blur:sigma=1.5',
                                  'downsample:factor=4', 'noise:sigma=20', 'jpeg:quality=10'])
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
    m = json.loads((tmp_path / 'seed3' / 'metrics.json').read_text())   # every degradation has a composite
    assert (tmp_path / 'seed3' / 'composite.png').exists() and m['composite']['keeps'] == (
        'low frequencies' if spec.startswith(('noise', 'jpeg')) else
        'measurement' if spec.startswith(('blur', 'downsample')) else 'luminance' if spec == 'grayscale' else 'pixels')


def test_inpainting_composite_keeps_known_pixels(tmp_path, capsys):
    code, out = run(['--target', 'seed:3', '--simulate', '--degradation', 'inpaint:mode=center,size=0.4',
                     '--outdir', tmp_path], capsys)
    assert code == 0, out.err
    d = tmp_path / 'seed3'
    clean, deg, rest, comp = (png(d / f).astype(int) for f in ('target.png', 'degraded.png', 'restored.png',
                                                               'composite.png'))
    hole = (deg == 0).all(-1)
    assert 0.1 < hole.mean() < 0.3 and not hole[0, 0] and hole[16, 16]
    np.testing.assert_array_equal(comp[~hole], clean[~hole])  # known pixels: the target's
    np.testing.assert_array_equal(comp[hole], rest[hole])     # the hole: the restoration's
    m = json.loads((d / 'metrics.json').read_text())
    mse = ((comp - clean) ** 2).mean()
    assert m['composite']['psnr'] == pytest.approx(10 * np.log10(255 ** 2 / mse), abs=1e-3)
    assert m['composite']['psnr'] > m['vs_clean']['psnr'] and 0 < m['composite']['ssim'] <= 1
    assert m['composite']['keeps'] == 'pixels' and 'composite' in out.out


def test_colourisation_composite_keeps_the_target_s_luminance(tmp_path, capsys):
    code, out = run(['--target', 'seed:3', '--simulate', '--degradation', 'grayscale', '--outdir', tmp_path], capsys)
    assert code == 0, out.err
    d = tmp_path / 'seed3'
    clean, deg, rest, comp = (png(d / f).astype(float) for f in ('target.png', 'degraded.png', 'restored.png',
                                                                 'composite.png'))
    y = np.array([0.299, 0.587, 0.114])
    inside = ((comp > 0) & (comp < 255)).all(-1)   # pixels the clipping to [0, 255] left alone
    assert inside.mean() > 0.3   # (the random network's images are often saturated)
    # the luminance is the target's (up to the rounding of three channels to 8 bits) ...
    assert np.abs(comp @ y - deg @ y)[inside].max() <= 1.0
    # ... and the colour is the restoration's: every channel moved by the same amount
    shift = comp - rest
    assert np.abs(shift - shift.mean(-1, keepdims=True))[inside].max() <= 1.0
    assert np.abs(shift).max() > 10                # it did change something
    m = json.loads((d / 'metrics.json').read_text())
    assert m['composite']['keeps'] == 'luminance' and m['composite']['psnr'] > m['vs_clean']['psnr']


@pytest.mark.parametrize('spec', ['jpeg:quality=20', 'noise:sigma=20', 'downsample:factor=2,method=bicubic'])
def test_a_degradation_that_is_not_affine_gets_the_photo_s_low_frequencies(tmp_path, capsys, spec):
    """JPEG, noise, a clamped resize: no image degrades exactly to the target, but the composite's degraded local
    means are the target's, and it is closer to the original than the restoration."""
    import torch.nn.functional as F
    from ganinv_core.hooks import Pipeline, get_registry
    from ganinv_core.metrics import gaussian_window
    code, out = run(['--target', 'seed:3', '--simulate', '--degradation', 'grayscale', '--degradation', spec,
                     '--outdir', tmp_path], capsys)
    assert code == 0, out.err
    d = tmp_path / 'seed3'
    m = json.loads((d / 'metrics.json').read_text())
    assert m['composite']['keeps'] == 'low frequencies' and m['composite']['psnr'] > m['vs_clean']['psnr']
    pipe = Pipeline([get_registry().build_degradation(s) for s in ('grayscale', spec)])
    g = gaussian_window(19, 3.0)

    def local_mean_off(img):   # RMS of the Gaussian-smoothed residual of the degraded image, grey levels
        r = pipe(to_tensor(png(d / img))) - to_tensor(png(d / 'degraded.png'))
        r = F.conv2d(r, g.view(1, 1, -1, 1).expand(3, 1, -1, 1), padding=(9, 0), groups=3)
        r = F.conv2d(r, g.view(1, 1, 1, -1).expand(3, 1, 1, -1), padding=(0, 9), groups=3)
        return float(r.square().mean().sqrt()) * 127.5
    assert local_mean_off('composite.png') < local_mean_off('restored.png') / 4


def test_no_composite_without_degradations(tmp_path, capsys):
    code, out = run(['--target', 'seed:3', '--outdir', tmp_path], capsys)
    assert code == 0 and not (tmp_path / 'seed3' / 'composite.png').exists()
    assert 'composite' not in json.loads((tmp_path / 'seed3' / 'metrics.json').read_text())


def test_colourisation_with_holes_keeps_the_luminance(tmp_path, capsys):
    code, out = run(['--target', 'seed:3', '--simulate', '--degradation', 'grayscale', '--degradation',
                     'inpaint:mode=center', '--outdir', tmp_path / 'both'], capsys)
    m = json.loads((tmp_path / 'both' / 'seed3' / 'metrics.json').read_text())
    assert code == 0 and m['composite']['keeps'] == 'luminance'


@pytest.mark.parametrize('specs', [['downsample:factor=4'], ['blur:sigma=1.5'],
                                   ['blur:sigma=1', 'downsample:factor=2', 'grayscale']])
def test_blurred_or_small_target_composite_degrades_back_to_the_target(tmp_path, capsys, specs):
    """composite.png for a blur or a resize: the restoration moved towards the set of images the degraded photo
    could come from, so degrading it gives back (nearly) the photo, and it is closer to the original."""
    from ganinv_core.hooks import Pipeline, get_registry
    args = [a for s in specs for a in ('--degradation', s)]
    code, out = run(['--target', 'seed:3', '--simulate', *args, '--outdir', tmp_path], capsys)
    assert code == 0, out.err
    d = tmp_path / 'seed3'
    deg, rest, comp = (png(d / f) for f in ('degraded.png', 'restored.png', 'composite.png'))
    pipe = Pipeline([get_registry().build_degradation(s) for s in specs])
    again = lambda img: pipe(to_tensor(img))   # noqa: E731
    target = to_tensor(deg)
    before, after = ((again(x) - target).square().mean().sqrt().item() * 127.5 for x in (rest, comp))
    # (the tiny random network's restorations are far off and often saturated, which clipping to [0, 255] undoes
    # in part; engine/test_consistency.py checks the exact consistency on unsaturated images)
    assert after < before / 8, (before, after)
    m = json.loads((d / 'metrics.json').read_text())
    assert m['composite']['keeps'] == 'measurement' and m['composite']['psnr'] > m['vs_clean']['psnr']
    assert m['composite']['residual'] == pytest.approx({'restored': before, 'composite': after}, rel=1e-4)


def test_restarts_keep_the_lowest_loss_and_show_every_start(tmp_path, capsys):
    args = ['--target', 'seed:1', 'seed:2', '--simulate', '--degradation', 'grayscale', '--restarts', '3']
    code, out = run([*args, '--outdir', tmp_path / 'b'], capsys)
    assert code == 0, out.err
    assert run([*args, '--batch-size', '1', '--outdir', tmp_path / 'o'], capsys)[0] == 0
    for name in ('seed1', 'seed2'):
        d = tmp_path / 'b' / name
        m = json.loads((d / 'metrics.json').read_text())
        info = m['restarts']
        assert len(info['losses']) == 3 and info['chosen'] == int(np.argmin(info['losses']))
        assert m['loss']['total'] == pytest.approx(min(info['losses']))
        assert m['vs_clean']['psnr'] == pytest.approx(info['psnr_vs_clean'][info['chosen']])
        assert 0 < info['spread']['mean'] < info['spread']['max'] <= 255 / 2   # the starts' luminance std
        # four panels each: three starts and their spread; original, degraded, restored, composite
        assert png(d / 'restarts.png').shape[1] == png(d / 'comparison.png').shape[1]
        check_outputs(d)
        # a target's starts never depend on the other photos of its batch
        one = json.loads((tmp_path / 'o' / name / 'metrics.json').read_text())['restarts']
        np.testing.assert_allclose(one['losses'], info['losses'], rtol=1e-3)


def test_metrics_csv_and_the_mean_line(tmp_path, capsys):
    import csv
    code, out = run(['--target', 'seed:1', 'seed:2', tmp_path / 'missing.png', '--simulate', '--degradation',
                     'inpaint', '--outdir', tmp_path / 'o'], capsys)
    assert code == 2
    rows = list(csv.DictReader((tmp_path / 'o' / 'metrics.csv').open()))
    assert [r['target'] for r in rows] == ['missing', 'seed1', 'seed2']
    assert rows[0]['status'] == 'bad input' and 'no such file' in rows[0]['error'] and rows[0]['psnr_after'] == ''
    for r in rows[1:]:
        m = json.loads((tmp_path / 'o' / r['target'] / 'metrics.json').read_text())
        assert r['status'] == 'ok' and float(r['psnr_after']) == pytest.approx(m['vs_clean']['psnr'])
        assert float(r['psnr_before']) == pytest.approx(m['degraded_vs_clean']['psnr'])
        assert float(r['psnr_hole_after']) == pytest.approx(m['hole']['psnr_restored'])
        assert float(r['psnr_composite']) == pytest.approx(m['composite']['psnr']) and r['restart_chosen'] == ''
        assert int(r['steps']) == 3
    after = np.mean([float(r['psnr_after']) for r in rows[1:]])
    before = np.mean([float(r['psnr_before']) for r in rows[1:]])
    line = next(ln for ln in out.out.splitlines() if ln.startswith('mean of'))
    assert line.startswith(f'mean of 2 target(s): PSNR before {before:.2f} dB, after {after:.2f} dB, composite ')
    code, out = run(['--target', 'seed:1', '--outdir', tmp_path / 'r'], capsys)   # restoring: against the target
    rows = list(csv.DictReader((tmp_path / 'r' / 'metrics.csv').open()))
    assert f'mean of 1 target(s): PSNR vs target {float(rows[0]["psnr_vs_target"]):.2f} dB' in out.out
    assert rows[0]['psnr_after'] == ''


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


def test_bad_files_among_good_ones(tmp_path, capsys, monkeypatch, G):
    from ganinv_core.io import images
    monkeypatch.setattr(images, 'MAX_PIXELS', 2000)
    (tmp_path / 'broken.png').write_bytes(b'garbage')
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'photos').mkdir()
    photo(tmp_path / 'photos' / 'a.png', (40, 30))
    photo(tmp_path / 'photos' / 'b.jpg', (30, 40), seed=1)
    photo(tmp_path / 'big.png', (60, 50))
    code, out = run(['--target', 'seed:1', tmp_path / 'broken.png', tmp_path / 'empty', tmp_path / 'photos',
                     tmp_path / 'big.png', tmp_path / 'gone.png', '--outdir', tmp_path / 'o'], capsys)
    assert code == 2
    assert out.err.splitlines() == [  # one line per bad input, in order: the file and the reason
        f'error: {tmp_path / "broken.png"}: not an image Pillow can read',
        f'error: {tmp_path / "empty"}: folder has no images (.png, .jpg, .jpeg, .bmp, .tif, .tiff, .webp, .gif)',
        f'error: {tmp_path / "big.png"}: 60x50 is larger than the limit of 2000 pixels',
        f'error: {tmp_path / "gone.png"}: no such file or folder']
    for name in ('seed1', 'a', 'b'):  # the good targets, the folder's included, are all written
        check_outputs(tmp_path / 'o' / name, G)
    rj = json.loads((tmp_path / 'o' / 'run.json').read_text())
    assert rj['status'] == 'done with errors'
    assert {k: v['status'] for k, v in rj['targets'].items()} == {
        'broken': 'bad input', 'empty': 'bad input', 'big': 'bad input', 'gone': 'bad input',
        'seed1': 'ok', 'a': 'ok', 'b': 'ok'}
    assert sorted(p.name for p in (tmp_path / 'o').iterdir()) == ['a', 'b', 'metrics.csv', 'run.json', 'seed1']


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
    assert not (tmp_path / 'o' / 'q').exists()
    d = tmp_path / 'o' / 'p'
    assert png(d / 'degraded.png')[16, 16].max() == 0  # the hole, black
    hole = (png(d / 'degraded.png') == 0).all(-1)
    comp, shown, rest = png(d / 'composite.png'), png(d / 'target.png'), png(d / 'restored.png')
    assert (comp[~hole] == shown[~hole]).all() and (comp[hole] == rest[hole]).all()  # the photo kept, hole filled
    comp_metrics = json.loads((d / 'metrics.json').read_text())['composite']   # no clean original: no PSNR
    assert comp_metrics['keeps'] == 'pixels' and set(comp_metrics) == {'keeps', 'residual'}
    assert comp_metrics['residual']['composite'] == 0 < comp_metrics['residual']['restored']
    code, out = run(['--target', tmp_path / 'p.png', '--mask', tmp_path / 'small.png', '--outdir', tmp_path / 'x'],
                    capsys)
    assert code == 2 and 'mask is 40x20 but the photo is 40x30' in out.err


@pytest.mark.parametrize('device', DEVICES)
def test_composites_are_made_on_the_run_s_device_a_batch_at_once(tmp_path, capsys, monkeypatch, device):
    """Made on the CPU, the composites of a GPU run would cost more than its optimisation: they run where G runs."""
    from ganinv_core import engine
    calls, real = [], engine.consistent

    def spy(pipe, restored, observed, mask=None, **kw):
        calls.append((restored.device.type, observed.device.type, mask.device.type, len(restored)))
        return real(pipe, restored, observed, mask, **kw)
    monkeypatch.setattr(engine, 'consistent', spy)
    code, out = run(['--target', 'seed:1', 'seed:2', '--simulate', '--degradation', 'blur:sigma=1', '--device', device,
                     '--outdir', tmp_path], capsys)
    assert code == 0, out.err
    assert calls == [(device, device, device, 2)]
    assert all((tmp_path / f'seed{k}' / 'composite.png').exists() for k in (1, 2))


def test_mask_file_stage_is_graph_safe_and_affine():
    """--mask's stage may be replayed in a CUDA graph (so a --mask run is not left eager) and has a composite."""
    from ganinv_core.hooks.testing import _check_graph_safe
    known = (np.arange(64).reshape(8, 8) % 3 > 0).astype(np.float32)
    stage = cli._file_mask(known)
    assert stage.cuda_graph_safe and stage.affine

    def build(device):
        s = cli._file_mask(known).to(device)
        x = torch.zeros(2, 3, 8, 8, device=device, requires_grad=True)
        return lambda: s(x).sum().backward()
    _check_graph_safe('mask-file', build)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.equal(stage(x), torch.where(torch.from_numpy(known) > 0, x, torch.tensor(-1.0)))


def test_existing_outputs_are_kept(tmp_path, capsys):
    assert run(['--target', 'seed:1', '--outdir', tmp_path], capsys)[0] == 0
    before = {p: p.read_bytes() for p in tmp_path.rglob('*') if p.is_file()}
    code, out = run(['--target', 'seed:1', '--steps', '4', '--outdir', tmp_path], capsys)
    assert code == 2 and 'already exists; pass --overwrite' in out.err
    assert {p: p.read_bytes() for p in tmp_path.rglob('*') if p.is_file()} == before
    assert run(['--target', 'seed:1', '--steps', '4', '--outdir', tmp_path, '--overwrite'], capsys)[0] == 0
    assert json.loads((tmp_path / 'seed1' / 'metrics.json').read_text())['steps'] == 4
    (tmp_path / 'notes.txt').write_text('mine')
    code, out = run(['--target', 'seed:1', '--outdir', tmp_path / 'notes.txt', '--overwrite'], capsys)
    assert code == 2 and out.err == f'error: {tmp_path / "notes.txt"}: exists and is not a folder\n'
    assert (tmp_path / 'notes.txt').read_text() == 'mine'
    (tmp_path / 'table').mkdir()
    (tmp_path / 'table' / 'metrics.csv').write_text('mine')
    code, out = run(['--target', 'seed:1', '--outdir', tmp_path / 'table'], capsys)
    assert code == 2 and 'metrics.csv: already exists; pass --overwrite' in out.err
    assert (tmp_path / 'table' / 'metrics.csv').read_text() == 'mine'


def _ctrl_c_in_second_batch(monkeypatch) -> list:
    """Ctrl-C after the first step of the second invert() call; returns the list that counts the calls."""
    import ganinv_core.engine as engine
    real, calls = engine.invert, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            k['callbacks'] = [*k['callbacks'], lambda p: (_ for _ in ()).throw(KeyboardInterrupt) if p.step else None]
        return real(*a, **k)
    monkeypatch.setattr(engine, 'invert', interrupted)
    return calls


@pytest.mark.parametrize('video', [False, True])
def test_ctrl_c_keeps_finished_targets(tmp_path, capsys, monkeypatch, video):
    if video:   # the interrupted target's video, encoded as it went, leaves no temporary file either
        pytest.importorskip('imageio_ffmpeg')
    calls = _ctrl_c_in_second_batch(monkeypatch)
    code, out = run(['--target', 'seed:1', 'seed:2', 'seed:3', '--batch-size', '1', '--snapshots', '1',
                     '--outdir', tmp_path] + ['--save-video'] * video, capsys)
    assert code == 130 and out.err.strip() == f'interrupted: 1 finished target(s) kept in {tmp_path}'
    assert len(calls) == 2  # the third target was never started
    check_outputs(tmp_path / 'seed1')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['metrics.csv', 'run.json', 'seed1']  # no partial folder or file
    assert sorted(p.name for p in (tmp_path / 'seed1').iterdir()) == sorted([*FILES, 'step0001.png']
                                                                             + ['progress.mp4'] * video)
    rj = json.loads((tmp_path / 'run.json').read_text())
    assert rj['status'] == 'interrupted' and rj['targets'] == {'seed1': {'status': 'ok', 'folder': 'seed1'}}


def test_resume_restores_only_what_an_interrupted_run_left(tmp_path, capsys, monkeypatch):
    targets = ['--target', 'seed:1', 'seed:2', 'seed:3', '--batch-size', '1', '--outdir', tmp_path]
    _ctrl_c_in_second_batch(monkeypatch)
    assert run(targets, capsys)[0] == 130
    monkeypatch.undo()
    first = {p: p.read_bytes() for p in (tmp_path / 'seed1').iterdir()}
    code, out = run([*targets, '--resume'], capsys)
    assert code == 0, out.err
    assert out.err == f'resuming {tmp_path}: 1 target(s) restored before, 2 to go\n'
    assert 'seed1' not in out.out and 'seed2' in out.out and 'seed3' in out.out
    assert {p: p.read_bytes() for p in (tmp_path / 'seed1').iterdir()} == first   # left as it was
    rj = json.loads((tmp_path / 'run.json').read_text())
    assert rj['status'] == 'done' and sorted(rj['targets']) == ['seed1', 'seed2', 'seed3']
    assert all(v['status'] == 'ok' for v in rj['targets'].values()) and rj['resumed_from']
    assert (tmp_path / 'metrics.csv').read_text().count('\nseed') == 3   # the table covers the earlier run too
    # the resumed targets are what an uninterrupted run gives
    assert run([*targets[:-1], tmp_path / 'all'], capsys)[0] == 0
    for name in ('seed2', 'seed3'):
        a, b = (load_latent(d / name / 'projected_w.npz') for d in (tmp_path, tmp_path / 'all'))
        np.testing.assert_array_equal(a['w'], b['w'])
    code, out = run([*targets, '--resume'], capsys)   # nothing left
    assert code == 0 and out.err == f'resuming {tmp_path}: 3 target(s) restored before, 0 to go\n'


def test_resume_after_a_killed_run_and_with_new_targets(tmp_path, capsys):
    """A run killed outright leaves run.json 'running' and the folders it finished: those are skipped."""
    assert run(['--target', 'seed:1', '--outdir', tmp_path], capsys)[0] == 0
    rj = json.loads((tmp_path / 'run.json').read_text())
    (tmp_path / 'run.json').write_text(json.dumps(dict(rj, status='running', targets={})))
    code, out = run(['--target', 'seed:1', 'seed:4', '--outdir', tmp_path, '--resume'], capsys)
    assert code == 0 and 'seed4' in out.out and 'seed1:' not in out.out
    assert sorted(json.loads((tmp_path / 'run.json').read_text())['targets']) == ['seed1', 'seed4']
    code, out = run(['--target', 'seed:9', '--outdir', tmp_path / 'fresh', '--resume'], capsys)   # nothing to resume
    assert code == 0 and (tmp_path / 'fresh' / 'seed9').is_dir()


@pytest.mark.parametrize('change, message', [
    (['--steps', '4'], "was made with steps = 3, this run has 4; give the same options, or --overwrite"),
    (['--degradation', 'grayscale'], "was made with degradation = [], this run has ['grayscale']"),
    (['--seed', '1'], 'was made with seed = 303, this run has 1'),
    (['--overwrite'], '--resume: keeps the targets already restored, --overwrite replaces them; give one'),
])
def test_resume_refuses_other_options(tmp_path, capsys, change, message):
    assert run(['--target', 'seed:1', '--outdir', tmp_path], capsys)[0] == 0
    before = (tmp_path / 'run.json').read_bytes()
    code, out = run(['--target', 'seed:1', 'seed:2', '--outdir', tmp_path, '--resume', *change], capsys)
    assert code == 2 and message in out.err and out.err.count('\n') == 1
    assert (tmp_path / 'run.json').read_bytes() == before and not (tmp_path / 'seed2').exists()


def test_resume_refuses_a_run_json_it_cannot_read(tmp_path, capsys):
    tmp_path.joinpath('run.json').write_text('{"not": "ours"}')
    code, out = run(['--target', 'seed:1', '--outdir', tmp_path, '--resume'], capsys)
    assert code == 2 and out.err == (f"error: {tmp_path / 'run.json'}: cannot resume from it: not a run.json of "
                                     "ganinv-run (KeyError: 'config')\n")


def test_video_and_snapshots(tmp_path, capsys):
    pytest.importorskip('imageio_ffmpeg')
    code, out = run(['--target', 'seed:1', '--steps', '6', '--save-video', '--snapshots', '2,4', '--outdir', tmp_path],
                    capsys)
    assert code == 0, out.err
    d = tmp_path / 'seed1'
    assert png(d / 'step0002.png').shape == png(d / 'step0004.png').shape == (32, 32, 3)
    import imageio.v2 as imageio
    r = imageio.get_reader(d / 'progress.mp4', format='FFMPEG')
    assert r.count_frames() >= 2 and r.get_data(0).shape == (32, 64, 3)  # target | restoration
    first = r.get_data(0)
    r.close()
    assert np.abs(first[:, :32].astype(int) - png(d / 'target.png')).mean() < 8  # left: the target
    assert sorted(p.name for p in d.iterdir() if p.name.startswith('.') or 'tmp' in p.name) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ['metrics.csv', 'run.json', 'seed1']   # no temporary video left


def test_save_video_without_ffmpeg_fails_first(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, 'imageio_ffmpeg', None)  # as if the plugin were not installed
    code, out = run(['--target', 'seed:1', '--save-video', '--outdir', tmp_path / 'o'], capsys)
    assert code == 2 and len(out.err.strip().splitlines()) == 1
    assert out.err.startswith('error: --save-video: needs imageio with its ffmpeg plugin')
    assert not (tmp_path / 'o').exists()


def test_progress_bar_unless_quiet(tmp_path, capsys):
    assert cli.main(['--network', 'random-32', '--steps', '3', '--target', 'seed:1', 'seed:2', '--batch-size', '1',
                     '--loss', 'mse', '--outdir', str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert 'batch 1/2' in err and 'batch 2/2' in err and '3/3' in err and 'mse=' in err and 'it/s=' in err
    assert run(['--target', 'seed:1', '--outdir', tmp_path / 'q'], capsys)[1].err == ''


def test_device_and_precision_flags(tmp_path, capsys):
    code, out = run(['--target', 'seed:1', '--device', 'cpu', '--precision', 'bf16', '--channels-last',
                     '--outdir', tmp_path], capsys)
    assert code == 0, out.err
    m = json.loads((tmp_path / 'seed1' / 'metrics.json').read_text())
    rj = json.loads((tmp_path / 'run.json').read_text())
    assert m['precision'] == 'bf16' and rj['config']['precision'] == 'bf16' and rj['versions']['device'] == 'cpu'
    assert m['step'] == 'eager (auto: cpu is not a CUDA device)'
    assert rj['config']['channels-last'] is True
    assert rj['config']['cuda-graph'] == 'auto'   # the default: graphs on CUDA devices when every plugin allows
    assert cli.parse(['--no-cuda-graph']).cuda_graph is False and cli.parse(['--cuda-graph']).cuda_graph is True
    assert cli.parse([]).cuda_graph == 'auto'
    code, out = run(['--target', 'seed:1', '--device', 'cpu', '--precision', 'bf16', '--polish', '0.34',
                     '--outdir', tmp_path / 'p'], capsys)
    assert code == 0, out.err
    m = json.loads((tmp_path / 'p' / 'seed1' / 'metrics.json').read_text())
    assert m['precision'] == 'bf16 (last 1 step fp32)'
    assert json.loads((tmp_path / 'p' / 'run.json').read_text())['config']['polish'] == 0.34
    code, out = run(['--target', 'seed:1', '--polish', '2', '--outdir', tmp_path / 'q'], capsys)
    assert code == 2
    assert out.err == "error: argument --polish: must be a fraction in [0, 1], got '2' (see ganinv-run --help)\n"
    assert not (tmp_path / 'q').exists()


def _toml(cfg: dict) -> str:
    def val(v):
        return json.dumps(v) if not isinstance(v, bool) else str(v).lower()
    return ''.join(f'{k} = {val(v)}\n' for k, v in cfg.items())


def test_run_json_is_enough_to_rerun(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    photo(tmp_path / 'p.png')
    code, out = run(['--target', 'p.png', 'seed:2', '--degradation', 'grayscale', '--latent-space', 'w+',
                     '--loss', 'mse', '--loss', 'latent-dist:weight=0.5', '--seed', '9', '--batch-size', '2',
                     '--outdir', 'a'], capsys)
    assert code == 0, out.err
    rj = json.loads((tmp_path / 'a' / 'run.json').read_text())
    assert rj['cwd'] == str(tmp_path) and rj['command'][1:] == [*BASE, '--target', 'p.png', 'seed:2',
                                                                '--degradation', 'grayscale', '--latent-space',
                                                                'w+', '--loss', 'mse', '--loss',
                                                                'latent-dist:weight=0.5', '--seed', '9',
                                                                '--batch-size', '2', '--outdir', 'a']
    (tmp_path / 'again.toml').write_text(_toml(dict(rj['config'], outdir='b')))
    assert cli.main(['--config', 'again.toml']) == 0
    for name in ('p', 'seed2'):
        a, b = (load_latent(tmp_path / d / name / 'projected_w.npz') for d in ('a', 'b'))
        np.testing.assert_allclose(a['w'], b['w'], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(png(tmp_path / 'a' / name / 'restored.png'),
                                      png(tmp_path / 'b' / name / 'restored.png'))


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
    cfg.write_text('steps = [\n')
    assert cli.main(['--config', str(cfg)]) == 2
    assert f"{cfg}: not valid TOML" in capsys.readouterr().err
    cfg.write_text('stpes = 3\n')
    assert cli.main(['--config', str(cfg)]) == 2
    assert f"{cfg}: unknown key 'stpes'" in capsys.readouterr().err
    cfg.write_text('steps = "many"\n')
    assert cli.main(['--config', str(cfg)]) == 2
    assert f"{cfg}: key 'steps'" in capsys.readouterr().err
    for value, want in (('false', False), ('true', True), ('"auto"', 'auto')):
        cfg.write_text(f'cuda-graph = {value}\n')
        assert cli.parse(['--config', str(cfg)]).cuda_graph == want
    cfg.write_text('cuda-graph = "sometimes"\n')
    assert cli.main(['--config', str(cfg)]) == 2
    assert f"{cfg}: key 'cuda-graph': expected true, false or " in capsys.readouterr().err


@pytest.mark.parametrize('args, message', [
    (['--target', 'seed:1', '--degradation', 'noise'], "'noise': works in simulation only; add --simulate"),
    (['--target', 'seed:1', '--degradation', 'nosuch'], 'nosuch'),
    (['--target', 'seed:1', '--loss', 'nosuch'], "loss spec 'nosuch': unknown loss 'nosuch'"),
    (['--target', 'seed:1', '--loss', 'vgg16:weights=missing.pt'], "loss 'vgg16': weights='missing.pt' no such file"),
    (['--target', 'seed:1', '--arcface', 'missing.pth'], "ArcFace weights 'missing.pth': no such file"),
    (['--target', 'seed:1', '--simulate', '--landmarks', 'nose-finder'],
     "--landmarks: detector spec 'nose-finder': unknown detector"),
    (['--target', 'seed:1', '--init', 'missing.npz'], 'missing.npz'),
    (['--target', 'seed:1', '--network', 'random-7'], 'random-7'),
    (['--target', 'seed:1', '--device', 'nosuch'], "--device 'nosuch': not usable here"),
    (['--target', 'seed:1', '--mask', 'm.png', '--simulate'], '--mask: marks damage in a real photo'),
    ([], '--target: give at least one'),
    # flags argparse refuses: one line too, not its usage block
    (['--target', 'seed:1', '--steps', '0'], "argument --steps: must be a whole number in [1, 1000000], got '0' "
                                             '(see ganinv-run --help)'),
    # was OOM-killed
    (['--target', 'seed:1', '--steps', '99999999999'], 'argument --steps: must be a whole number in [1, 1000000]'),
    (['--target', 'seed:1', '--steps', '1e3'], "argument --steps: must be a whole number in [1, 1000000], got '1e3'"),
    (['--target', 'seed:1', '--batch-size', 'x'], "argument --batch-size: must be a whole number >= 1, got 'x'"),
    (['--target', 'seed:1', '--polish', 'half'], "argument --polish: must be a number, got 'half'"),
    (['--target', 'seed:1', '--lr', 'nan'], "argument --lr: must be a finite number >= 0, got 'nan'"),
    (['--target', 'seed:1', '--lr=-0.1'], "argument --lr: must be a finite number >= 0, got '-0.1'"),
    (['--target', 'seed:1', '--snapshots', '5,x'], "argument --snapshots: expected comma-separated step numbers"),
    (['--target', 'seed:1', '--face', 'biggest'], "argument --face: expected 'largest', 'all' or a face index"),
    (['--target', 'seed:1', '--latent-space', 'z'], "argument --latent-space: invalid choice: 'z'"),
    (['--target', 'seed:1', '--stpes', '3'], 'unrecognized arguments: --stpes 3'),
    (['--target', 'seed:1', '--config', 'missing.toml'], 'missing.toml: no such config file'),
    (['--target', 'seed:1', '--snapshots', '2,10'], '--snapshots: step 10 is past the last step (3, --steps)'),
    (['--target', 'seed:1', '--restarts', '0'], "argument --restarts: must be a whole number in [1, 64], got '0'"),
    (['--target', 'seed:1', '--init-search', '0'], "argument --init-search: must be a whole number in [1, 1024]"),
    (['--target', 'seed:1', '--init-search', '4', '--restarts', '2'],
     '--init-search: searches for the start; it cannot be combined with --restarts'),
    (['--target', 'seed:1', '--init-search', '4', '--init', 'w.npz'],
     '--init-search: searches for the start; it cannot be combined with --init'),
    (['--target', 'seed:1', '--restarts', '2', '--init', 'w.npz'], '--restarts: the starts are w_avg and random '
                                                                   'latents; it cannot be combined with --init'),
    (['--target', 'seed:1', '--tune', '-1'], "argument --tune: must be a whole number in [0, 100000], got '-1'"),
    (['--target', 'seed:1', '--tune-lr', '0'], "argument --tune-lr: must be a finite number > 0, got '0'"),
    (['--target', 'seed:1', '--tune', '5', '--restarts', '2'], '--tune: not with --restarts; tune the chosen start '
                                                               'in a second run from its latent (--init)'),
    (['--target', 'seed:1', '--save-generator'], '--save-generator: only a tuned generator is written; give --tune '
                                                 'STEPS too'),
])
def test_bad_input_one_line(tmp_path, capsys, args, message):
    code, out = run([*args, '--outdir', tmp_path / 'o'], capsys)
    assert code == 2
    assert message in out.err and len(out.err.strip().splitlines()) == 1
    assert not (tmp_path / 'o').exists()


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
    assert cli.convert_main(['random-32']) == 2
    assert capsys.readouterr().err == ('error: the following arguments are required: dst '
                                       '(see ganinv-convert --help)\n')
    for dst, why in ((tmp_path, 'is a folder, not a file name'),
                     (tmp_path / 'g.safetensors' / 'x.safetensors', 'cannot write it (FileExistsError: ')):
        assert cli.convert_main(['random-32', str(dst), '--overwrite']) == 2
        err = capsys.readouterr().err
        assert err.startswith(f'error: {dst}: {why}') and err.count('\n') == 1, err
    assert load_generator(str(tmp_path / 'g.safetensors')).img_resolution == 32   # untouched


def test_a_system_error_mid_run_is_one_line(tmp_path, capsys, monkeypatch):
    """The disk filling up (any OSError outside the input checks): one line, exit 1, no traceback."""
    from ganinv_core.io import outputs

    def full(*a, **k):
        raise OSError(28, 'No space left on device', str(tmp_path / 'o' / 'run.json'))
    monkeypatch.setattr(outputs, 'write_json', full)
    code, out = run(['--target', 'seed:1', '--outdir', tmp_path / 'o'], capsys)
    assert code == 1 and out.err == f"error: [Errno 28] No space left on device: '{tmp_path / 'o' / 'run.json'}'\n"


def _memory_limit(monkeypatch, fits: int, error):
    """invert() raises ``error`` at step 1 for batches of more than ``fits`` photos; returns the sizes tried."""
    import ganinv_core.engine as engine
    real, sizes = engine.invert, []

    def limited(G, targets, **k):
        sizes.append(len(targets))
        if len(targets) > fits:
            def oom(p):
                if p.step:
                    raise error
            k['callbacks'] = [*k['callbacks'], oom]
        return real(G, targets, **k)
    monkeypatch.setattr(engine, 'invert', limited)
    return sizes


def test_out_of_memory_halves_the_batch_and_changes_no_result(tmp_path, capsys, monkeypatch):
    targets = ['--target', 'seed:1', 'seed:2', 'seed:3', 'seed:4', 'seed:5', '--simulate', '--degradation',
               'grayscale', '--seed', '5']
    assert run([*targets, '--batch-size', '1', '--outdir', tmp_path / 'one'], capsys)[0] == 0
    sizes = _memory_limit(monkeypatch, 2, torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB'))
    code, out = run([*targets, '--batch-size', '4', '--outdir', tmp_path / 'o'], capsys)
    assert code == 0, out.err
    assert sizes == [4, 2, 2, 1]    # the rest of the run keeps the size that fits
    note = 'seed1, seed2, seed3, seed4: out of memory on cpu with 4 photos at once; continuing 2 at a time'
    assert out.err == f'note: {note}\n'
    rj = json.loads((tmp_path / 'o' / 'run.json').read_text())
    assert rj['status'] == 'done' and rj['notes'] == [note]
    for k in range(1, 6):
        a, b = (load_latent(tmp_path / d / f'seed{k}' / 'projected_w.npz') for d in ('one', 'o'))
        np.testing.assert_allclose(a['w'], b['w'], rtol=0, atol=2e-3)
        check_outputs(tmp_path / 'o' / f'seed{k}')


def test_one_photo_out_of_memory_is_one_line_and_the_others_go_on(tmp_path, capsys, monkeypatch):
    sizes = _memory_limit(monkeypatch, 0, RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
                                                       "can't allocate memory: you tried to allocate 99 bytes."))
    code, out = run(['--target', 'seed:1', 'seed:2', '--batch-size', '2', '--outdir', tmp_path], capsys)
    assert code == 1 and sizes == [2, 1, 1]
    errors = [ln for ln in out.err.splitlines() if ln.startswith('error:')]
    assert len(errors) == 2 and errors[0].startswith('error: seed1: out of memory on cpu (RuntimeError: [enforce')
    assert errors[0].endswith('one photo at 32x32 does not fit: free memory on the device, or try --precision '
                              'bf16 (about half the memory of fp32)')
    rj = json.loads((tmp_path / 'run.json').read_text())
    assert [v['status'] for v in rj['targets'].values()] == ['failed', 'failed']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['metrics.csv', 'run.json']


@gpu_only
def test_a_real_out_of_memory_on_the_gpu_is_recovered_from(tmp_path, capsys, monkeypatch):
    """CUDA's own OutOfMemoryError, under a memory cap set from what one photo takes: the batch is halved until it
    fits, the failed batches' memory is given back (else the smaller batches would fail too), and every photo is
    restored as a batch of one would restore it.

    The cap limits what the allocator reserves, so it is set from the reserved peak of a run of one photo (a CUDA
    graph's pool and the eager warm-up's blocks are reserved apart: the allocated peak is no measure of it). What
    each retry started from is in the failure message. In fp32: in TF32 (the default) the two runs' w differed by
    up to 7e-3 after 3 steps (H200), more than this test's 2e-3 (cuDNN may pick other algorithms under the cap)."""
    args = ['--network', 'random-256', '--steps', '3', '--quiet', '--device', 'cuda', '--precision', 'fp32',
            '--target', *[f'seed:{k}' for k in range(8)]]
    for again in (False, True):   # the first run fills the caches (w statistics, kernels); the second is measured
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        assert cli.main([*args[:-7], '--batch-size', '1', '--outdir', str(tmp_path / 'one')]
                        + ['--overwrite'] * again) == 0
    one = torch.cuda.max_memory_reserved()
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    freed, real_free = [], cli._free_memory

    def free(device):   # what a retry starts from, once the failed batch's memory is given back
        real_free(device)
        freed.append(f'{torch.cuda.memory_allocated() / 2**20:.0f}/{torch.cuda.memory_reserved() / 2**20:.0f}')
    monkeypatch.setattr(cli, '_free_memory', free)
    torch.cuda.set_per_process_memory_fraction(min(1.0, 1.5 * one / total))   # one photo fits, eight do not
    try:
        code = cli.main([*args, '--batch-size', '8', '--outdir', str(tmp_path / 'o')])
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    err = capsys.readouterr().err
    assert code == 0, f'one photo reserved {one / 2**20:.0f} MiB; cap {1.5 * one / 2**20:.0f} MiB; allocated/' \
                      f'reserved MiB after each failure: {freed}\n{err}'
    assert 'out of memory on cuda' in err and 'at a time' in err
    for k in range(8):
        assert (tmp_path / 'o' / f'seed{k}' / 'restored.png').is_file()
    a, b = (load_latent(tmp_path / d / 'seed0' / 'projected_w.npz') for d in ('one', 'o'))
    np.testing.assert_allclose(a['w'], b['w'], rtol=0, atol=2e-3)


def test_other_errors_from_a_batch_are_not_taken_for_out_of_memory(tmp_path, capsys, monkeypatch):
    _memory_limit(monkeypatch, 0, RuntimeError('an engine bug'))
    with pytest.raises(RuntimeError, match='an engine bug'):
        run(['--target', 'seed:1', '--outdir', tmp_path], capsys)


def test_example_plugin_listed_and_usable(tmp_path):
    """The template plugin, installed into a --target folder on PYTHONPATH, is listed and usable."""
    import shutil
    root = Path(__file__).resolve().parents[2]
    site, src = tmp_path / 'site', tmp_path / 'plugin'       # build from a copy: nothing written into the repo
    shutil.copytree(root / 'examples' / 'ganinv-plugin-example', src,
                    ignore=shutil.ignore_patterns('build', '*.egg-info', '__pycache__'))
    r = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation',
                        '--target', str(site), str(src)],
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
    """Landmarks of one synthetic face per `faces` vertical strip of a photo wider than 45 px, none otherwise."""
    name = 'fake'

    def __init__(self, faces=1):
        self.faces = faces

    def detect(self, image):
        h, w = image.shape[:2]
        if w <= 45:
            return []
        out = []
        for k in range(self.faces):
            sw, x0 = w / self.faces, k * w / self.faces
            lm = np.tile([x0 + sw / 2, h / 2], (68, 1)).astype(float)
            lm[36:42] = [x0 + sw * 0.38, h * 0.4] + np.random.RandomState(0).rand(6, 2)   # left eye
            lm[42:48] = [x0 + sw * 0.62, h * 0.4] + np.random.RandomState(1).rand(6, 2)   # right eye
            lm[48:60] = [x0 + sw * 0.5, h * 0.7] + np.random.RandomState(2).rand(12, 2)   # mouth
            lm[48], lm[54] = [x0 + sw * 0.42, h * 0.7], [x0 + sw * 0.58, h * 0.7]        # mouth corners
            out.append(lm)
        return out


def _use_detector(monkeypatch, det):
    """Make ``--align`` use ``det`` whatever ``--detector`` says."""
    from ganinv_core.io import align
    orig = align.align_faces
    monkeypatch.setattr(align, 'align_faces',
                        lambda photo, size, detector=None, which='largest', **kw: orig(photo, size, det, which, **kw))


def test_align_pastes_back_and_no_face_is_reported(tmp_path, capsys, monkeypatch):
    _use_detector(monkeypatch, _FakeDetector())
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


def test_align_colourisation_pastes_the_composite(tmp_path, capsys, monkeypatch):
    """A grey photo, colourised: the face pasted back is composite.png (the photo's own luminance, G's colour),
    not restored.png."""
    from ganinv_core.io import align
    _use_detector(monkeypatch, _FakeDetector())
    grey = png(photo(tmp_path / 'face.png', (80, 60))) @ np.array([0.299, 0.587, 0.114])
    Image.fromarray(np.repeat(grey.round().astype(np.uint8)[..., None], 3, 2)).save(tmp_path / 'grey.png')
    code, out = run(['--target', tmp_path / 'grey.png', '--align', '--degradation', 'grayscale', '--outdir',
                     tmp_path / 'o'], capsys)
    assert code == 0, out.err
    d = tmp_path / 'o' / 'grey'
    info = json.loads((d / 'alignment.json').read_text())
    face = align.AlignedFace(info['index'], np.array(info['landmarks']), np.array(info['quad']),
                             np.zeros((info['size'], info['size'], 3), np.uint8), np.array(info['transform']))
    photo_now = png(tmp_path / 'grey.png')
    assert np.array_equal(png(d / 'pasted.png'), align.paste_back(photo_now, png(d / 'composite.png'), face))
    assert not np.array_equal(png(d / 'pasted.png'), align.paste_back(photo_now, png(d / 'restored.png'), face))


def test_align_all_faces_pasted_into_one_photo(tmp_path, capsys, monkeypatch):
    _use_detector(monkeypatch, _FakeDetector(faces=2))
    photo(tmp_path / 'two.png', (160, 60))
    code, out = run(['--target', tmp_path / 'two.png', '--align', '--face', 'all', '--outdir', tmp_path / 'o'],
                    capsys)
    assert code == 0, out.err
    both = png(tmp_path / 'o' / 'two_pasted.png')
    original = png(tmp_path / 'two.png')
    assert both.shape == original.shape
    for k, strip in enumerate((slice(30, 50), slice(110, 130))):        # the centre of each face
        own = png(tmp_path / 'o' / f'two_face{k}' / 'pasted.png')
        assert np.array_equal(both[20:40, strip], own[20:40, strip])    # each face as restored on its own
        assert not np.array_equal(both[20:40, strip], original[20:40, strip])


def test_resume_redoes_a_photo_whose_faces_are_not_all_done(tmp_path, capsys, monkeypatch):
    _use_detector(monkeypatch, _FakeDetector(faces=2))
    photo(tmp_path / 'two.png', (160, 60))
    args = ['--target', tmp_path / 'two.png', '--align', '--face', 'all', '--outdir', tmp_path / 'o']
    assert run(args, capsys)[0] == 0
    done = (tmp_path / 'o' / 'two_pasted.png').read_bytes()
    code, out = run([*args, '--resume'], capsys)
    assert code == 0 and 'restored before, 0 to go' in out.err
    (tmp_path / 'o' / 'two_pasted.png').unlink()       # the photo with both faces was never written
    code, out = run([*args, '--resume'], capsys)
    assert code == 0 and 'restored before, 2 to go' in out.err   # both faces again: the pasted photo needs both
    assert (tmp_path / 'o' / 'two_pasted.png').read_bytes() == done


def test_detector_spec_reaches_the_registry(tmp_path, capsys):
    photo(tmp_path / 'p.png', (80, 60))
    code, out = run(['--target', tmp_path / 'p.png', '--align', '--detector', 'no-such-detector',
                     '--outdir', tmp_path / 'o'], capsys)
    assert code == 2 and str(tmp_path / 'p.png') in out.err and 'no-such-detector' in out.err


def _batch_threads(monkeypatch, meet: int = 2) -> list:
    """Records the thread that runs each batch; the first ``meet`` batches wait for each other (so they ran at once,
    on different workers)."""
    import threading
    real, names, barrier = cli._run_batch, [], threading.Barrier(meet, timeout=60)

    def spy(*a, **k):
        names.append(threading.current_thread().name)
        if len(names) <= meet:
            barrier.wait()
        return real(*a, **k)
    monkeypatch.setattr(cli, '_run_batch', spy)
    return names


def _workers_alive() -> list:
    import threading
    return [t.name for t in threading.enumerate() if t.name.startswith('ganinv-')]


def test_several_devices_share_the_batches_and_change_no_result(tmp_path, capsys, monkeypatch):
    targets = ['--target', *[f'seed:{k}' for k in range(1, 6)], '--simulate', '--degradation', 'blur:sigma=1',
               '--batch-size', '1']
    assert run([*targets, '--outdir', tmp_path / 'one'], capsys)[0] == 0
    names = _batch_threads(monkeypatch)
    code, out = run([*targets, '--device', 'cpu,cpu', '--outdir', tmp_path / 'two'], capsys)
    assert code == 0, out.err
    assert len(names) == 5 and len(set(names)) == 2 and not _workers_alive()
    rj = json.loads((tmp_path / 'two' / 'run.json').read_text())
    assert rj['status'] == 'done' and list(rj['targets']) == [f'seed{k}' for k in range(1, 6)]   # target order
    rows = (tmp_path / 'two' / 'metrics.csv').read_text().splitlines()[1:]
    assert [r.split(',')[0] for r in rows] == [f'seed{k}' for k in range(1, 6)]
    assert sum(line.startswith('seed') for line in out.out.splitlines()) == 5
    for k in range(1, 6):   # which worker restored a target changes nothing
        a, b = (load_latent(tmp_path / d / f'seed{k}' / 'projected_w.npz') for d in ('one', 'two'))
        np.testing.assert_allclose(a['w'], b['w'], rtol=0, atol=1e-5)
        np.testing.assert_array_equal(png(tmp_path / 'one' / f'seed{k}' / 'composite.png'),
                                      png(tmp_path / 'two' / f'seed{k}' / 'composite.png'))


def test_ctrl_c_with_several_devices_stops_every_worker_and_keeps_what_finished(tmp_path, capsys, monkeypatch):
    import _thread
    import ganinv_core.engine as engine
    real, calls = engine.invert, []

    def invert(*a, **k):   # Ctrl-C (to the main thread, as a terminal sends it) during the third batch
        calls.append(1)
        if len(calls) == 3:
            k['callbacks'] = [*k['callbacks'], lambda p: _thread.interrupt_main() if p.step == 10 else None]
        return real(*a, **k)
    monkeypatch.setattr(engine, 'invert', invert)
    code, out = run(['--target', *[f'seed:{k}' for k in range(1, 9)], '--batch-size', '1', '--steps', '40',
                     '--device', 'cpu,cpu', '--outdir', tmp_path], capsys)
    assert code == 130 and 'interrupted: ' in out.err and not _workers_alive()
    rj = json.loads((tmp_path / 'run.json').read_text())
    done = [n for n, v in rj['targets'].items() if v['status'] == 'ok']
    assert rj['status'] == 'interrupted' and len(done) == len(rj['targets']) < 8 and len(calls) < 8
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(done + ['metrics.csv', 'run.json'])  # no partial folder


def test_a_worker_s_crash_stops_the_others_and_is_raised(tmp_path, capsys, monkeypatch):
    _memory_limit(monkeypatch, 0, RuntimeError('an engine bug'))
    with pytest.raises(RuntimeError, match='an engine bug'):
        run(['--target', 'seed:1', 'seed:2', 'seed:3', '--batch-size', '1', '--device', 'cpu,cpu',
             '--outdir', tmp_path], capsys)
    assert not _workers_alive()


def test_device_lists_are_checked_entry_by_entry(tmp_path, capsys):
    code, out = run(['--target', 'seed:1', '--device', 'cpu,,cpu', '--outdir', tmp_path], capsys)
    assert code == 2 and out.err == "error: --device 'cpu,,cpu': an empty entry in the list; give e.g. " \
                                    "cuda:0,cuda:1\n"
    code, out = run(['--target', 'seed:1', '--device', 'cpu, nope', '--outdir', tmp_path], capsys)
    assert code == 2 and out.err.startswith("error: --device 'nope': not usable here (")
    code, out = run(['--target', 'seed:1', '--device', 'cpu,cpu', '--compile', '--outdir', tmp_path], capsys)
    assert code == 2 and out.err == 'error: --compile: works with one device; --device names 2\n'
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


@gpu_only
def test_two_workers_on_one_gpu_capture_their_graphs_side_by_side(tmp_path, capsys):
    """Two threads on one card, each capturing (in turn) and replaying CUDA graphs while the other runs: every
    step is a graph replay, and the results are those of one worker. In fp32: in TF32 (the default) the two runs' w
    differed by up to 3.5e-3 after 20 steps (H200), more than this test's 1e-4 (cuDNN's benchmark may pick other
    algorithms when two threads time them at once)."""
    targets = ['--target', *[f'seed:{k}' for k in range(1, 5)], '--batch-size', '1', '--steps', '20', '--simulate',
               '--degradation', 'downsample:factor=2', '--precision', 'fp32', '--device']
    assert run([*targets, 'cuda', '--outdir', tmp_path / 'one'], capsys)[0] == 0
    code, out = run([*targets, 'cuda,cuda', '--outdir', tmp_path / 'two'], capsys)
    assert code == 0, out.err
    for k in range(1, 5):
        m = json.loads((tmp_path / 'two' / f'seed{k}' / 'metrics.json').read_text())
        assert m['step'] == 'cuda graph', m['step']
        a, b = (load_latent(tmp_path / d / f'seed{k}' / 'projected_w.npz') for d in ('one', 'two'))
        np.testing.assert_allclose(a['w'], b['w'], rtol=0, atol=1e-4)


def test_mask_file_with_several_devices(tmp_path, capsys):
    """Each worker builds its own degradations (the --mask stage copied): every photo keeps its known pixels."""
    for k in range(3):
        photo(tmp_path / f'p{k}.png', (40, 30), seed=k)
    m = np.full((30, 40), 255, np.uint8)
    m[10:20, 15:25] = 0
    Image.fromarray(m).save(tmp_path / 'mask.png')
    code, out = run(['--target', *(tmp_path / f'p{k}.png' for k in range(3)), '--mask', tmp_path / 'mask.png',
                     '--batch-size', '1', '--device', 'cpu,cpu', '--outdir', tmp_path / 'o'], capsys)
    assert code == 0, out.err
    for k in range(3):
        d = tmp_path / 'o' / f'p{k}'
        hole = (png(d / 'degraded.png') == 0).all(-1)
        assert hole.any() and (png(d / 'composite.png')[~hole] == png(d / 'target.png')[~hole]).all()


@pytest.mark.parametrize('spec', ['downsample:factor=2,method=bicubic', 'jpeg:quality=10', 'grayscale'])
def test_psnr_after_is_that_of_restored_png(tmp_path, capsys, spec):
    """The scores describe the image users get: G's raw output, which the random network pushes far outside
    [-1, 1], is clipped as restored.png is (to within its 8-bit rounding)."""
    code, out = run(['--target', 'seed:3', '--simulate', '--degradation', spec, '--steps', '20', '--outdir', tmp_path],
                    capsys)
    assert code == 0, out.err
    d = tmp_path / 'seed3'
    rest, clean = (png(d / f).astype(float) for f in ('restored.png', 'target.png'))
    m = json.loads((d / 'metrics.json').read_text())
    assert m['vs_clean']['psnr'] == pytest.approx(10 * np.log10(255 ** 2 / ((rest - clean) ** 2).mean()), abs=0.05)


def test_arcface_scores_identity_before_and_after(tmp_path, capsys):
    """--arcface adds ArcFace identity to every comparison (the composite's too), to metrics.csv and to the mean
    line; without the identity loss the run is otherwise the same."""
    import csv

    from ganinv_core import metrics
    from ganinv_core.io.images import to_tensor
    from ganinv_core.nets.arcface import shared_arcface
    args = ['--target', 'seed:1', 'seed:2', '--simulate', '--degradation', 'blur:sigma=1', '--loss', 'mse']
    code, out = run([*args, '--arcface', 'random:3', '--outdir', tmp_path / 'o'], capsys)
    assert code == 0
    rows = list(csv.DictReader((tmp_path / 'o' / 'metrics.csv').open()))
    for r in rows:
        m = json.loads((tmp_path / 'o' / r['target'] / 'metrics.json').read_text())
        assert float(r['identity_after']) == pytest.approx(m['vs_clean']['identity'])
        assert float(r['identity_before']) == pytest.approx(m['degraded_vs_clean']['identity'])
        assert float(r['identity_vs_target']) == pytest.approx(m['vs_target']['identity'])
        assert -1 <= m['vs_clean']['identity'] <= 1 and r['identity_reference'] == ''
        comp = png(tmp_path / 'o' / r['target'] / 'composite.png')   # the composite is scored too
        net = shared_arcface('random:3')
        want = metrics.identity(to_tensor(comp), to_tensor(png(tmp_path / 'o' / r['target'] / 'target.png')), net)
        assert m['composite']['identity'] == pytest.approx(float(want[0]), abs=1e-5)
    before = np.mean([float(r['identity_before']) for r in rows])
    after = np.mean([float(r['identity_after']) for r in rows])
    line = next(ln for ln in out.out.splitlines() if ln.startswith('mean of'))
    assert line.endswith(f'; identity before {before:.3f}, after {after:.3f}')
    assert run([*args, '--outdir', tmp_path / 'p'])[0] == 0
    p = json.loads((tmp_path / 'p' / 'seed1' / 'metrics.json').read_text())
    o = json.loads((tmp_path / 'o' / 'seed1' / 'metrics.json').read_text())
    assert 'identity' not in p['vs_clean'] and p['vs_clean']['psnr'] == o['vs_clean']['psnr']


def test_simulated_noise_is_each_target_s_own_and_the_same_every_run(tmp_path):
    """The same clean image twice (seed1, seed1-2) gets two different noise draws (so do a video's frames, named
    apart), and a second run draws the same again."""
    args = ['--target', 'seed:1', 'seed:1', '--simulate', '--degradation', 'noise:sigma=20', '--loss', 'mse']
    assert run([*args, '--outdir', tmp_path / 'a'])[0] == 0 and run([*args, '--outdir', tmp_path / 'b'])[0] == 0
    a1, a2 = png(tmp_path / 'a' / 'seed1' / 'degraded.png'), png(tmp_path / 'a' / 'seed1-2' / 'degraded.png')
    np.testing.assert_array_equal(png(tmp_path / 'a' / 'seed1' / 'target.png'),
                                  png(tmp_path / 'a' / 'seed1-2' / 'target.png'))
    assert (a1 != a2).mean() > 0.5
    np.testing.assert_array_equal(a1, png(tmp_path / 'b' / 'seed1' / 'degraded.png'))


def test_landmarks_score_before_after_and_composite(tmp_path, capsys, monkeypatch):
    """--landmarks DETECTOR: each image's landmark error against the original (a plugin detector here, whose face
    moves with the image's red mean), in metrics.json and metrics.csv; restoring a real photo, against the photo."""
    import csv
    import types

    from ganinv_core import hooks
    from ganinv_core.metrics import landmark_error

    class Shifted(hooks.LandmarkDetector):
        name, help = 'shifted-face', 'test detector'

        def detect(self, image):
            if image[..., 0].mean() > 250:
                return []
            return [np.stack([np.linspace(5, 25, 68) + image[..., 0].mean() / 10, np.linspace(8, 20, 68)], 1)]
    plugin = types.ModuleType('faces')
    plugin.ganinv_landmark_detectors = hooks.hookimpl(lambda: [Shifted])
    reg = hooks.Registry(plugins={'faces': plugin})
    monkeypatch.setattr(hooks, 'get_registry', lambda: reg)
    code, out = run(['--target', 'seed:1', 'seed:2', '--simulate', '--degradation', 'grayscale', '--loss', 'mse',
                     '--landmarks', 'shifted-face', '--outdir', tmp_path / 'o'], capsys)
    assert code == 0, out.err
    rows = {r['target']: r for r in csv.DictReader((tmp_path / 'o' / 'metrics.csv').open())}
    for name in ('seed1', 'seed2'):
        d = tmp_path / 'o' / name
        m = json.loads((d / 'metrics.json').read_text())['landmarks']
        clean, det = png(d / 'target.png'), Shifted()
        assert m['restored'] == pytest.approx(landmark_error(png(d / 'restored.png'), clean, det))
        assert m['composite'] == pytest.approx(landmark_error(png(d / 'composite.png'), clean, det))
        assert m['degraded'] == pytest.approx(landmark_error(png(d / 'degraded.png'), clean, det))
        assert float(rows[name]['landmarks_after']) == pytest.approx(m['restored'])
        assert float(rows[name]['landmarks_before']) == pytest.approx(m['degraded'])
    run_json = json.loads((tmp_path / 'o' / 'run.json').read_text())
    assert run_json['config']['landmarks'] == 'shifted-face'
    # restoring a real photo: how far the restoration moved the face's shape from the photo's
    code, out = run(['--target', 'seed:1', '--degradation', 'grayscale', '--loss', 'mse', '--landmarks',
                     'shifted-face', '--outdir', tmp_path / 'r'], capsys)
    d = tmp_path / 'r' / 'seed1'
    m = json.loads((d / 'metrics.json').read_text())['landmarks']
    assert code == 0 and set(m) == {'restored', 'composite'}
    assert m['restored'] == pytest.approx(landmark_error(png(d / 'restored.png'), png(d / 'degraded.png'), Shifted()))


def test_landmark_errors_name_what_had_no_face():
    """No face in the original (or, restoring, the photo): nothing is scored, each entry says why; in one image only:
    that one is null."""
    class Dark:   # a face in images darker than mid-grey, at a place moved by the red mean
        name = 'dark'

        def detect(self, image):
            m = image[..., 0].mean()
            return [] if m > 128 else [np.stack([np.linspace(5, 25, 68) + m / 10, np.linspace(8, 20, 68)], 1)]
    grey = np.full((8, 8, 3), 100, np.uint8)
    light = np.full((8, 8, 3), 200, np.uint8)
    out = cli._landmark_errors(Dark(), light, grey, grey, None)
    assert out == {'degraded': None, 'restored': None,
                   'errors': dict.fromkeys(('degraded', 'restored'), "original: no face found by detector 'dark'")}
    out = cli._landmark_errors(Dark(), grey, light[..., :1], grey - 50, grey)
    assert out['degraded'] is None and out['errors'] == {'degraded': "no face found by detector 'dark'"}
    assert cli._landmark_errors(Dark(), None, light[:4, :4, :1], grey, None) == \
        {'restored': None, 'errors': {'restored': "photo: no face found by detector 'dark'"}}   # photo resized
    assert out['composite'] == 0 and out['restored'] == pytest.approx(5 / np.linalg.norm(
        np.subtract(*np.stack([np.linspace(5, 25, 68), np.linspace(8, 20, 68)], 1)[[36, 45]])))


def test_the_identity_loss_s_network_scores_identity_and_its_references(tmp_path, capsys):
    """Without --arcface, the identity loss's network is the metric's: identity in the comparisons, and its reference
    photos' embedding scores the restoration (metrics.csv identity_reference)."""
    import csv
    ref = tmp_path / 'me.png'
    Image.fromarray(np.random.RandomState(3).randint(0, 256, (48, 48, 3), np.uint8)).save(ref)
    code, out = run(['--target', 'seed:1', '--simulate', '--degradation', 'inpaint', '--loss', 'mse', '--loss',
                     f'identity:weights=random:2,reference={ref}', '--outdir', tmp_path / 'o'], capsys)
    assert code == 0, out.err
    m = json.loads((tmp_path / 'o' / 'seed1' / 'metrics.json').read_text())
    (row,) = csv.DictReader((tmp_path / 'o' / 'metrics.csv').open())
    assert -1 <= m['reference_identity']['restored'] <= 1 and -1 <= m['reference_identity']['target'] <= 1
    assert float(row['identity_reference']) == pytest.approx(m['reference_identity']['restored'])
    assert 'identity' in m['vs_clean'] and 'identity' in m['composite']


def test_init_search_records_every_candidate_and_the_one_chosen(tmp_path):
    assert run(['--target', 'seed:1', '--simulate', '--degradation', 'inpaint', '--loss', 'mse', '--init-search', '5',
                '--outdir', tmp_path / 'o'])[0] == 0
    info = json.loads((tmp_path / 'o' / 'seed1' / 'metrics.json').read_text())['init_search']
    assert len(info['losses']) == 5 and info['chosen'] == int(np.argmin(info['losses']))
    assert json.loads((tmp_path / 'o' / 'run.json').read_text())['config']['init-search'] == 5


def test_tune_restores_from_a_tuned_generator_and_keeps_the_pivot(tmp_path):
    """--tune: restored.png (and the composite) come from each photo's tuned copy of G, closer to the photo than the
    latent alone; projected_w.npz is the pivot, the plain run's latent; metrics.json says what tuning did."""
    args = ['--target', 'seed:1', 'seed:2', '--simulate', '--degradation', 'downsample:factor=2', '--loss', 'mse']
    assert run([*args, '--outdir', tmp_path / 'plain'])[0] == 0
    assert run([*args, '--tune', '6', '--tune-lr', '1e-3', '--outdir', tmp_path / 'tuned'])[0] == 0
    for k in (1, 2):
        plain, tuned = (json.loads((tmp_path / d / f'seed{k}' / 'metrics.json').read_text())
                        for d in ('plain', 'tuned'))
        assert tuned['tune']['steps'] == 6 and tuned['tune']['lr'] == 1e-3
        assert tuned['tune']['loss_after'] < tuned['tune']['loss_before'] and 'tune' not in plain
        assert tuned['vs_target']['psnr'] > plain['vs_target']['psnr']
        a, b = (load_latent(tmp_path / d / f'seed{k}' / 'projected_w.npz') for d in ('plain', 'tuned'))
        np.testing.assert_array_equal(a['w'], b['w'])
        assert not np.array_equal(*(png(tmp_path / d / f'seed{k}' / 'restored.png') for d in ('plain', 'tuned')))
    config = json.loads((tmp_path / 'tuned' / 'run.json').read_text())['config']
    assert config['tune'] == 6 and config['tune-lr'] == 1e-3
    import csv
    with open(tmp_path / 'tuned' / 'metrics.csv', newline='') as f:
        table = list(csv.DictReader(f))
    m = json.loads((tmp_path / 'tuned' / 'seed1' / 'metrics.json').read_text())['tune']
    assert float(table[0]['tune_loss_before']) == pytest.approx(m['loss_before'])
    assert float(table[0]['tune_loss_after']) == pytest.approx(m['loss_after'])


def test_tune_shows_its_steps_on_the_progress_bar(tmp_path, capsys):
    assert cli.main(['--network', 'random-32', '--steps', '2', '--target', 'seed:1', 'seed:2', '--loss', 'mse',
                     '--tune', '3', '--outdir', str(tmp_path / 'o')]) == 0
    err = capsys.readouterr().err
    last = err.rsplit('\r', 1)[-1]
    assert 'batch 1/1 tuning' in last and '6/6' in last   # 3 steps x 2 photos, after the 2 latent steps
    assert 'mse=' not in last


def test_a_saved_tuned_generator_renders_restored_png_from_the_latent_file(tmp_path):
    """--save-generator: generator.safetensors and projected_w.npz together give restored.png back, through the
    public loaders (`--network` takes the file)."""
    from ganinv_core.weights import load_generator
    assert run(['--target', 'seed:1', '--loss', 'mse', '--tune', '3', '--tune-lr', '1e-3', '--save-generator',
                '--outdir', tmp_path / 'o'])[0] == 0
    d = tmp_path / 'o' / 'seed1'
    G = load_generator(d / 'generator.safetensors')
    lat = load_latent(d / 'projected_w.npz')
    with torch.no_grad():
        img = G.synthesis(torch.as_tensor(lat['w']), noise_mode='const',
                          noise={k: torch.as_tensor(v) for k, v in lat['noise'].items()})
    diff = np.abs(to_uint8(img)[0].astype(int) - png(d / 'restored.png').astype(int))
    assert diff.max() <= 1

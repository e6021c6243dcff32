"""benchmarks/precision_check.py, profile_step.py and cli_default.py: what they print follows from what they
measure."""
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks'))
import cli_default  # noqa: E402
import precision_check  # noqa: E402
import profile_step  # noqa: E402


def test_precision_check_reports_zero_delta_for_the_reference_itself(capsys):
    """The same configuration twice (deterministic on the CPU) differs from the reference by exactly zero, and the
    bf16 verdict line appears only when bf16 ran."""
    precision_check.main(['--network', 'random-64', '--steps', '2', '--targets', '2', '--configs', 'fp32,fp32'])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(line.startswith('random-64 2 steps b2 fp32') for line in out)
    assert 'delta vs fp32: mean +0.000 (sd 0.000), per target +0.000 +0.000' in out[1]
    means = [float(re.search(r'psnr mean (-?[\d.]+) dB', line).group(1)) for line in out]
    assert means[0] == means[1] and means[0] > 0


def test_precision_check_names_an_unknown_configuration(capsys):
    with pytest.raises(SystemExit) as e:
        precision_check.main(['--configs', 'fp32,bf17'])
    assert e.value.code == 2 and "unknown ['bf17']" in capsys.readouterr().err


def test_profile_table_shares_add_up(capsys):
    """On the CPU: one operator table whose shares sum to 100 % of the time it reports (no event counted twice)."""
    profile_step.main(['--network', 'random-64', '--batch', '1', '--steps', '1', '--top', '1000'])
    out = capsys.readouterr().out.strip().splitlines()
    head = re.match(r'# random-64 batch 1 \w+ modconv=\w+ graph=False on cpu: ([\d.]+) ms/step of CPU time, by '
                    r'operator', out[0])
    assert head, out[0]
    rows = [re.match(r'.{70} +([\d.]+) +([\d.]+)% +([\d.]+)$', line) for line in out[2:]]
    assert rows and all(rows)
    # each printed value is rounded (to 0.1 % and 0.01 ms): the sums may be off by half a unit per row
    assert sum(float(r.group(2)) for r in rows) == pytest.approx(100, abs=0.05 * len(rows) + 1e-6)
    assert sum(float(r.group(1)) for r in rows) == pytest.approx(float(head.group(1)), abs=0.005 * len(rows) + 0.05)


def test_profile_vgg_part_times_the_loss_alone(capsys):
    """--part vgg: VGG16's convolutions (13 per forward) and its 5 per-level distances, none of the generator's ops."""
    profile_step.main(['--network', 'random-64', '--batch', '1', '--steps', '1', '--top', '1000', '--part', 'vgg'])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith('# random-64 batch 1') and '(VGG16 loss only)' in out[0]
    names = [line[:70].strip() for line in out[2:]]
    ours = {n.split()[0] for n in names if n.startswith('ganinv::')}
    assert ours == {'ganinv::lpips_distance', 'ganinv::lpips_distance_backward'}   # no bias_act / upfirdn2d / epilogue
    lp = [line for line in out[2:] if line.startswith('ganinv::lpips_distance ')]
    assert float(lp[0].split()[-1]) == 5                             # one per LPIPS level
    conv = [line for line in out[2:] if line.startswith('aten::convolution ')]
    assert conv and float(conv[0].split()[-1]) == 13                 # calls per step: VGG16's 13 forward convs


def test_precision_check_limits_reduced_precision_to_the_chosen_blocks():
    import torch
    from ganinv_core.weights import load_generator
    G = load_generator('random-256')
    syn = G.synthesis
    flags = {r: getattr(syn, f'b{r}').use_fp16 for r in syn.block_resolutions}
    assert any(flags.values())                          # config-f: the top resolutions run reduced
    with precision_check._reduced_blocks(G, 128):
        assert {r: getattr(syn, f'b{r}').use_fp16 for r in syn.block_resolutions} == \
            {r: f and r >= 128 for r, f in flags.items()}
    with precision_check._reduced_blocks(G, -64):
        assert {r: getattr(syn, f'b{r}').use_fp16 for r in syn.block_resolutions} == \
            {r: f and r <= 64 for r, f in flags.items()}
    ws = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(0)), None)
    with precision_check._reduced_blocks(G, 10 ** 6):   # no block left reduced: bf16 computes fp32's image
        img = syn(ws, noise_mode='const', force_fp32=False, half_dtype=torch.bfloat16)
    torch.testing.assert_close(img, syn(ws, noise_mode='const', force_fp32=True))
    assert {r: getattr(syn, f'b{r}').use_fp16 for r in syn.block_resolutions} == flags   # restored


def test_precision_check_bf16_hp_keeps_coefficients_in_float32_for_its_run_only(monkeypatch, capsys):
    from ganinv_core.nets.synthesis import SynthesisLayer
    seen, real = [], precision_check.invert
    monkeypatch.setattr(precision_check, 'invert', lambda *a, **k: seen.append(SynthesisLayer.coef_fp32) or real(*a, **k))
    precision_check.main(['--network', 'random-64', '--steps', '2', '--targets', '1', '--configs', 'fp32,bf16-hp,bf16'])
    assert seen == [False, True, False] and SynthesisLayer.coef_fp32 is False
    assert 'bf16-hp' in capsys.readouterr().out


def test_cli_default_runs_both_configurations(tmp_path, capsys):
    """On the CPU `--cuda-graph auto` is the eager step, so the default and --no-cuda-graph restore identically;
    the script prints both runs' precision and rate and their ratio."""
    import numpy as np
    from PIL import Image
    cli_default.main(['--network', 'random-32', '--steps', '2', '--outdir', str(tmp_path)])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(('random-32', 'default /'))]
    assert [line.split()[5] for line in lines[:2]] == ['default', '--no-cuda-graph']
    assert all('precision fp32' in line for line in lines[:2]) and lines[2].startswith('default / --no-cuda-graph: ')
    for seed in range(1, 5):
        a, b = (np.asarray(Image.open(tmp_path / d / f'seed{seed}' / 'restored.png')) for d in ('default', 'no-cuda-graph'))
        np.testing.assert_array_equal(a, b)

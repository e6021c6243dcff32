"""`ganinv-run` at its defaults against `--no-cuda-graph`: the speed users meet, measured through the command line.

    python benchmarks/cli_default.py --network random-1024 --steps 200 [--outdir DIR]

Runs colourisation + inpainting in simulation on 4 seeds, once as `ganinv-run` defaults it (`--precision auto`,
`--cuda-graph auto`: on a CUDA GPU, TF32 and the step captured as a graph) and once with `--no-cuda-graph`, and prints
each run's precision and the steps/s that `metrics.json` records: the optimisation loop after set-up (loading, the
targets), including the graph's one-off warm-up and capture (~2 steps' work plus the capture), which a short run's rate
carries more of than a 1000-step one's.
"""
import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ganinv_core import cli  # noqa: E402


def run(network: str, steps: int, outdir: str, extra: list[str]) -> dict:
    """One `ganinv-run` call; the metrics of its first target."""
    argv = ['--network', network, '--target', 'seed:1', 'seed:2', 'seed:3', 'seed:4', '--simulate',
            '--degradation', 'grayscale', '--degradation', 'inpaint', '--steps', str(steps), '--quiet',
            '--overwrite', '--outdir', outdir, *extra]
    code = cli.main(argv)
    if code != 0:
        raise SystemExit(f'cli_default: ganinv-run {" ".join(argv)} exited with {code}')
    with open(os.path.join(outdir, 'seed1', 'metrics.json')) as f:
        return json.load(f)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--network', default='random-64')
    ap.add_argument('--steps', type=int, default=20)
    ap.add_argument('--outdir', default=None, help='where the runs write (default: a temporary folder)')
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rates = {}
        for name, extra in (('default', []), ('--no-cuda-graph', ['--no-cuda-graph'])):
            m = run(a.network, a.steps, os.path.join(a.outdir or tmp, name.strip('-')), extra)
            rates[name] = m['steps_per_second']
            print(f'{a.network} {a.steps} steps, 4 photos, {name:16s} precision {m["precision"]:5s} '
                  f'{m["steps_per_second"]:.2f} steps/s', flush=True)
        print(f'default / --no-cuda-graph: {rates["default"] / rates["--no-cuda-graph"]:.2f}x')


if __name__ == '__main__':
    main()

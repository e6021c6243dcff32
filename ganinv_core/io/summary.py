"""The run's table: one row per target (``metrics.csv``), and the mean line ``ganinv-run`` prints at the end."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

# (column, path into metrics.json): restoration against the target and, in simulation, before/after against the clean
COLUMNS = (('psnr_vs_target', ('vs_target', 'psnr')), ('ssim_vs_target', ('vs_target', 'ssim')),
           ('lpips_vs_target', ('vs_target', 'lpips')),
           ('psnr_before', ('degraded_vs_clean', 'psnr')), ('psnr_after', ('vs_clean', 'psnr')),
           ('ssim_before', ('degraded_vs_clean', 'ssim')), ('ssim_after', ('vs_clean', 'ssim')),
           ('lpips_before', ('degraded_vs_clean', 'lpips')), ('lpips_after', ('vs_clean', 'lpips')),
           ('psnr_hole_before', ('hole', 'psnr_degraded')), ('psnr_hole_after', ('hole', 'psnr_restored')),
           ('psnr_composite', ('composite', 'psnr')),
           ('identity_vs_target', ('vs_target', 'identity')), ('identity_before', ('degraded_vs_clean', 'identity')),
           ('identity_after', ('vs_clean', 'identity')), ('identity_reference', ('reference_identity', 'restored')),
           ('landmarks_before', ('landmarks', 'degraded')), ('landmarks_after', ('landmarks', 'restored')),
           ('restart_chosen', ('restarts', 'chosen')),
           ('tune_loss_before', ('tune', 'loss_before')), ('tune_loss_after', ('tune', 'loss_after')),
           ('loss_total', ('loss', 'total')), ('steps', ('steps',)), ('steps_per_second', ('steps_per_second',)))


def _get(m: dict, path: tuple):
    for key in path:
        if not isinstance(m, dict) or key not in m:
            return None
        m = m[key]
    return m


def rows(outdir: str | Path, targets: dict) -> list[dict]:
    """One dict per target of ``run.json``'s ``targets`` (name -> status), by name, the finished ones filled from
    their ``metrics.json``; a number the run did not compute is None."""
    out = []
    for name, info in sorted(targets.items()):
        row = {'target': name, 'status': info.get('status'), 'error': info.get('error')}
        m = {}
        if info.get('status') == 'ok':
            try:
                m = json.loads((Path(outdir) / info.get('folder', name) / 'metrics.json').read_text())
            except (OSError, ValueError):
                row['status'], row['error'] = 'ok, metrics.json unreadable', None
        row.update({col: _get(m, path) for col, path in COLUMNS})
        out.append(row)
    return out


def to_csv(table: list[dict]) -> str:
    """The rows as CSV text (empty cells for None), columns in a fixed order."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=['target', 'status', *(c for c, _ in COLUMNS), 'error'], lineterminator='\n')
    w.writeheader()
    for r in table:
        w.writerow({k: '' if v is None else v for k, v in r.items()})
    return buf.getvalue()


def _mean(table: list[dict], col: str) -> float | None:
    vals = [float(r[col]) for r in table if r.get(col) is not None]   # "inf" (identical images) is a float too
    return sum(vals) / len(vals) if vals else None


def mean_line(table: list[dict]) -> str | None:
    """``mean of N targets: PSNR before 20.10 dB, after 24.30 dB`` (simulation) or ``... PSNR vs target ...``; None
    when no target finished."""
    done = [r for r in table if r['status'] == 'ok']
    if not done:
        return None

    def db(x):
        return 'inf' if math.isinf(x) else f'{x:.2f} dB'
    after = _mean(done, 'psnr_after')
    if after is None:
        return f'mean of {len(done)} target(s): PSNR vs target {db(_mean(done, "psnr_vs_target"))}'
    line = f'mean of {len(done)} target(s): PSNR before {db(_mean(done, "psnr_before"))}, after {db(after)}'
    comp, ident = _mean(done, 'psnr_composite'), _mean(done, 'identity_after')
    line += f', composite {db(comp)}' if comp is not None else ''
    return line + (f'; identity before {_mean(done, "identity_before"):.3f}, after {ident:.3f}'
                   if ident is not None else '')

"""Figures: the loss curves (loss.png) and the labelled side-by-side comparison (comparison.png).

Rendered with matplotlib's Agg canvas directly (no pyplot, no global backend), saved atomically. One figure at a
time: matplotlib is not thread-safe (its text parser, for one, fails when two threads lay out tick labels at once),
and ``ganinv-run --device a,b`` writes outputs from a thread per device.
"""
from __future__ import annotations

import functools
import io
import threading
from pathlib import Path

import numpy as np

from .outputs import write_bytes


_LOCK = threading.RLock()


def _one_at_a_time(fn):
    @functools.wraps(fn)
    def locked(*args, **kwargs):
        with _LOCK:
            return fn(*args, **kwargs)
    return locked


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format='png')
    write_bytes(path, buf.getvalue())


@_one_at_a_time
def heat(values: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """A 2-D array as a uint8 RGB image through matplotlib's ``magma`` colour map, 0 black to ``vmax`` (default: the
    array's maximum) pale yellow."""
    from matplotlib import colormaps
    v = np.asarray(values, dtype=np.float64)
    top = float(vmax if vmax is not None else v.max(initial=0.0)) or 1.0
    return (colormaps['magma'](np.clip(v / top, 0, 1))[..., :3] * 255).round().astype(np.uint8)


@_one_at_a_time
def loss_plot(history: dict[str, np.ndarray], path: str | Path, title: str = '') -> None:
    """One curve per loss term over the steps, on a log axis unless some value is negative.

    Args:
        history: {term: [steps]} values (``'total'`` drawn thicker).
    """
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    curves = {k: np.asarray(v, dtype=np.float64) for k, v in history.items()}
    log = all(np.all(v[np.isfinite(v)] >= 0) for v in curves.values())  # zeros are left out on a log axis
    for k, v in curves.items():
        ax.plot(np.arange(1, len(v) + 1), np.where(v > 0, v, np.nan) if log else v, label=k,
                lw=2.0 if k == 'total' else 1.0)
    if log:
        ax.set_yscale('log')
    ax.set_xlabel('step')
    ax.set_ylabel('weighted loss')
    ax.set_title(title or 'loss')
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


@_one_at_a_time
def comparison(panels: list[tuple[str, np.ndarray]], path: str | Path, cols: int | None = None) -> None:
    """Images side by side, each titled (e.g. original | degraded | restored).

    Args:
        panels: (label, uint8 (H, W, 3)) pairs; sizes may differ (shown at the same height, pixelated).
        cols: panels per row (default: all in one row).
    """
    cols = min(cols or len(panels), len(panels))
    rows = -(-len(panels) // cols)
    fig = _figure(2.6 * cols, 2.9 * rows)
    for i, (label, img) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(img, interpolation='nearest')
        ax.set_title(label, fontsize=11)
        ax.set_axis_off()
    fig.tight_layout()
    _save(fig, path)

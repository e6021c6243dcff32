"""The inversion engine: NVIDIA's projector, batched, with degradations, W / W+ and per-image noise.

    from ganinv_core.engine import invert
    result = invert(G, targets, degradations=['grayscale'], steps=1000)
"""
from ._consistency import consistent, match_low_frequencies
from ._inversion import MODCONV, Inversion
from ._loop import InversionError, Progress, Result, invert
from ._pipeline import DEFAULT_LOSSES
from ._precision import PRECISIONS
from ._wstats import w_stats

__all__ = ['invert', 'Inversion', 'MODCONV', 'Result', 'InversionError', 'Progress', 'DEFAULT_LOSSES', 'PRECISIONS',
           'w_stats', 'consistent', 'match_low_frequencies']

"""Degradation pipelines and loss sets built from spec strings or ready modules."""
from __future__ import annotations

from typing import Iterable

import torch

DEFAULT_LOSSES = ('vgg16', 'latent-dist', 'noise-reg')


def _hooks():
    import ganinv_core.hooks as hooks
    return hooks


def pipeline(specs: Iterable) -> torch.nn.Module:
    """Spec strings (``'inpaint:size=0.4'``), Degradation instances or a ready Pipeline -> Pipeline.

    ``pipe(x)`` degrades a generated image (skipping simulation-only stages), ``pipe.simulate(x)`` a clean
    one, ``pipe.mask(x)`` is the known-pixel mask in output space, ``pipe.output_size(res)`` its side.
    """
    hooks = _hooks()
    Pipeline = getattr(hooks, 'Pipeline', None)
    if Pipeline is None:  # not re-exported (yet): the class lives beside the base classes
        from ganinv_core.hooks._base import Pipeline
    if isinstance(specs, Pipeline):
        return specs
    reg = hooks.get_registry()
    return Pipeline([reg.build_degradation(s) if isinstance(s, str) else s for s in specs])


def build_losses(specs: Iterable | None) -> list[torch.nn.Module]:
    """Spec strings or Loss instances -> list of modules; None -> the default set (vgg16, latent-dist, noise-reg)."""
    specs = DEFAULT_LOSSES if specs is None else tuple(specs)
    if not specs:
        raise ValueError('losses: the loss set is empty; give at least one loss spec')
    reg = _hooks().get_registry()
    return [reg.build_loss(s) if isinstance(s, str) else s for s in specs]

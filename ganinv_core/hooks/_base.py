"""Base classes a plugin subclasses: Degradation, Loss (with LossContext), LandmarkDetector; Pipeline."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._spec import Param, SpecError, resolve


class _Configurable:
    """Typed parameters from ``params``, set as attributes by ``__init__(**kwargs)``."""
    name: ClassVar[str] = ''
    help: ClassVar[str] = ''
    params: ClassVar[tuple[Param, ...]] = ()
    #: keyword arguments the conformance suite builds this class with (e.g. offline weights).
    test_params: ClassVar[dict[str, Any]] = {}

    def _configure(self, kwargs: dict[str, Any]) -> None:
        self.config = resolve(self.params, kwargs, f'{self.kind} {self.name!r}')
        for key, value in self.config.items():
            setattr(self, key, value)

    def fail(self, key: str, reason: str) -> SpecError:
        """A SpecError naming this component and the offending parameter (for checks in ``__init__``)."""
        return SpecError(f'{self.kind} {self.name!r}: {key}={self.config.get(key)!r} {reason}')

    def spec(self) -> str:
        """The spec string that rebuilds this instance."""
        kv = ','.join(f'{k}={v}' for k, v in self.config.items() if v is not None)
        return f'{self.name}:{kv}' if kv else self.name

    def extra_repr(self) -> str:
        return ', '.join(f'{k}={v!r}' for k, v in self.config.items())


class Degradation(_Configurable, nn.Module):
    """A differentiable, batched image degradation on NCHW tensors in [-1, 1].

    Subclasses set ``name``, ``help``, ``params`` and implement ``forward``; they override ``mask`` when
    some pixels carry no information, ``output_size`` when the size changes, and ``transform_mask`` when
    known pixels of an earlier stage's mask must be re-mapped through this stage.
    """
    kind: ClassVar[str] = 'degradation'
    #: True: applied to a clean input in simulation only (e.g. noise), never to the generated image.
    simulate_only: ClassVar[bool] = False
    #: True: ``forward`` is safe to capture in a CUDA graph and replay: device work only, on tensors it already
    #: holds on the input's device after its first call (no host data copied in, no host-side randomness or
    #: state that changes between steps, no host sync). ``--cuda-graph auto`` (the default) replays the step
    #: as a graph only when every stage and loss of the run says so.
    cuda_graph_safe: ClassVar[bool] = False
    #: True: ``forward`` is affine, ``L x + c`` for a fixed linear map L and offset c, whatever the input (blur,
    #: area resizing, grayscale, holes; not JPEG, not a clamp that can bite). When every stage of a run is,
    #: ``composite.png`` is the restoration made consistent with the photo (``engine.consistent``). An instance may
    #: set it from its parameters.
    affine: ClassVar[bool] = False

    def __init__(self, **kwargs):
        nn.Module.__init__(self)
        self._configure(kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """[N,C,H,W] -> [N,C,h,w], both in [-1, 1]."""
        raise NotImplementedError

    def simulate(self, x: torch.Tensor, key: int | None = None) -> torch.Tensor:
        """Degrade a clean input (``--simulate``): ``forward``, unless the degradation draws random numbers, in
        which case ``key`` (an integer naming the target, or None) is mixed into its seed so that each target of a
        run, each frame of a video, gets its own draw and keeps it from run to run."""
        return self(x)

    def mask(self, x: torch.Tensor) -> torch.Tensor | None:
        """[N,1,h,w] with 1 = known pixel, in output space; None if every pixel is known."""
        return None

    def output_size(self, size: int) -> int:
        """Side of the output for a square input of side ``size``."""
        return size

    def transform_mask(self, m: torch.Tensor) -> torch.Tensor:
        """Carry an input-space mask [N,1,H,W] to output space: a pixel stays known only if all its inputs are."""
        size = self.output_size(m.shape[-1])
        if size == m.shape[-1]:
            return m
        return (F.interpolate(m, size=(size, size), mode='area') > 1 - 1e-4).to(m.dtype)


class Pipeline(nn.Module):
    """Degradations composed in the order given (e.g. blur, then downsample, then grayscale).

    ``forward(x)`` degrades a generated image (skipping ``simulate_only`` stages); ``simulate(x, key)`` degrades a
    clean input with every stage (``key``: see ``Degradation.simulate``); ``mask(x)`` is the product of every
    stage's mask carried to output space.
    """

    def __init__(self, degradations: Sequence[Degradation] = ()):
        super().__init__()
        self.stages = nn.ModuleList(degradations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for d in self.stages:
            x = x if d.simulate_only else d(x)
        return x

    def simulate(self, x: torch.Tensor, key: int | None = None) -> torch.Tensor:
        for d in self.stages:
            x = d.simulate(x, key)
        return x

    @torch.no_grad()
    def mask(self, x: torch.Tensor) -> torch.Tensor | None:
        m = None
        for d in self.stages:
            if d.simulate_only:
                continue
            m = d.transform_mask(m) if m is not None else None
            md = d.mask(x)
            m = md if m is None else m if md is None else m * md
            x = d(x)
        return m

    def output_size(self, size: int) -> int:
        for d in self.stages:
            size = d.output_size(size)
        return size


@dataclasses.dataclass
class LossContext:
    """What a loss sees at one optimisation step (N images).

    Attributes:
        pred: degraded generated images [N,C,h,w] in [-1, 1].
        target: degraded targets [N,C,h,w] in [-1, 1].
        mask: [N,1,h,w] (1 = known pixel) or None.
        image: generated images before degradation [N,C,H,W].
        w: the optimised latent [N, 1|num_ws, w_dim].
        w_avg: mean latent [w_dim] (or broadcastable to ``w``).
        w_std: scalar spread of W (NVIDIA's projector statistic).
        noise: optimised noise maps, a list of [N,1,R,R].
        w_init: the latent the run started from, shaped like ``w`` (w_avg, ``init``'s latent, or the previous
            frame's for a video), or None.
    """
    pred: torch.Tensor
    target: torch.Tensor
    mask: torch.Tensor | None = None
    image: torch.Tensor | None = None
    w: torch.Tensor | None = None
    w_avg: torch.Tensor | None = None
    w_std: float | torch.Tensor | None = None
    noise: list = dataclasses.field(default_factory=list)
    w_init: torch.Tensor | None = None


class Loss(_Configurable, nn.Module):
    """A loss term: ``forward(ctx) -> [N]``, one unweighted value per image (the engine applies ``weight``).

    Every loss has a float ``weight`` parameter, prepended automatically with the class's
    ``default_weight``. Images of one batch must never influence each other's values.
    """
    kind: ClassVar[str] = 'loss'
    #: As ``Degradation.cuda_graph_safe``, for ``forward``.
    cuda_graph_safe: ClassVar[bool] = False
    default_weight: ClassVar[float] = 1.0

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if 'weight' not in {p.name for p in cls.params}:
            cls.params = (Param('weight', float, cls.default_weight, 'multiplier of this term in the total loss'),
                          *cls.params)

    def __init__(self, **kwargs):
        nn.Module.__init__(self)
        self._configure(kwargs)

    def prepare(self, target: torch.Tensor, mask: torch.Tensor | None) -> None:
        """Called with the degraded targets [N,C,h,w] and mask before the first step, under the run's autocast; and
        again, at full precision, where a reduced-precision run switches precision for its last steps (``polish``),
        so that what it computes from the targets is recomputed at the precision the remaining steps use."""

    def forward(self, ctx: LossContext) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class LandmarkDetector(_Configurable):
    """Finds the 68 iBUG face landmarks in a photo: ``detect(uint8 HxWx3) -> list of float arrays (68, 2)``."""
    kind: ClassVar[str] = 'detector'

    def __init__(self, **kwargs):
        self._configure(kwargs)

    def detect(self, image: np.ndarray) -> list[np.ndarray]:  # pragma: no cover - abstract
        """One (68, 2) array of (x, y) pixel coordinates per face found (possibly none)."""
        raise NotImplementedError

    def __repr__(self):
        return f'{type(self).__name__}({self.extra_repr()})'

"""The step-level engine: an ``Inversion`` holds one batch's state; ``step()`` / ``run(k)`` advance it.

``invert()`` drives exactly this object, so the benchmarks time what users run. One step (reference doc §1.2):
    w_t = w + n_t sigma_t;  x = G(w_t, noise);  L = sum_i sum_k weight_k loss_k(D(x)_i, y_i);
    Adam on (w, noise) with lr_t;  noise renormalised per image.
The step never asks the host: lr, sigma and the step counter are device tensors and the per-term losses go to a
device buffer that ``losses()`` reads every few steps. Speed options (all equal to the default within float
tolerance): ``modconv`` (fused grouped conv vs modulate-conv-demodulate), ``cuda_graph`` (the whole step
captured once and replayed), ``compile`` (``torch.compile`` of the synthesis network).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from .._devices import usable_device
from .._errors import exc_line
from ..hooks import blame, blamed
from . import _graphs, _latents, _precision, _schedule, _wstats
from ._adam import Adam
from ._pipeline import build_losses, pipeline
from ._result import InversionError, Result, _as_images, _check_finite
from ._report import image_metrics

MODCONV = ('auto', 'fused', 'nonfused')


GRAPH_NOISE_LIMIT = 512 * 2 ** 20  # bytes of w-noise a graphed run draws up front, at most, under 'auto'


def resolve_cuda_graph(choice, device: torch.device, modules, noise_bytes: int) -> tuple[bool, str]:
    """``False | True | 'auto'`` -> (capture the step as a CUDA graph?, why).

    ``auto`` captures on CUDA devices when every degradation stage and loss of the step declares
    ``cuda_graph_safe`` (a third party's plugin that does not runs eagerly: a graph would replay, not redo, any
    host-side work of its), and the w-noise of every step, drawn up front, fits in ``GRAPH_NOISE_LIMIT``.

    Args:
        modules: the degradation stages applied to the generated image and the loss terms.
        noise_bytes: size of the up-front w-noise, steps x the latent's size.
    """
    if isinstance(choice, bool):
        return choice, 'requested' if choice else 'off'
    if choice != 'auto':
        raise ValueError(f"cuda_graph: must be True, False or 'auto', got {choice!r}")
    if device.type != 'cuda':
        return False, f'auto: {device.type} is not a CUDA device'
    unsafe = [f'{m.kind} {m.name!r}' for m in modules if not getattr(m, 'cuda_graph_safe', False)]
    if unsafe:
        return False, f'auto: {", ".join(unsafe)} not marked cuda_graph_safe'
    if noise_bytes > GRAPH_NOISE_LIMIT:
        return False, f'auto: the up-front w-noise would take {noise_bytes / 2 ** 20:.0f} MiB'
    return True, 'auto'


def resolve_modconv(modconv: str, device: torch.device, n: int) -> bool:
    """``'auto' | 'fused' | 'nonfused'`` -> ``fused_modconv`` for the synthesis network.

    Non-fused (modulate, one conv with the shared weight, demodulate) needs no per-sample weight gradient in the
    backward (a third of the generator's FLOPs) and lets the batch share one weight on tensor cores, so ``auto``
    picks it on every device (about 1.3x faster per step on the CPU too, benchmarks/RESULTS.md); the two forms
    are equal within float tolerance (tests/nets). ``fused`` is NVIDIA's projector's choice (eval, batch 1).
    """
    if modconv not in MODCONV:
        raise ValueError(f'modconv: {modconv!r} is not one of {", ".join(MODCONV)}')
    return modconv == 'fused'


#: the schedule and the loss history take memory in proportion to the steps: 10**6 is 3 hours at 10 ms a step
MAX_STEPS = 1_000_000


def _real(v) -> bool:
    """An int or float argument (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class Inversion:
    """One batch's optimisation state; see ``invert`` for the arguments it shares.

    Extra args:
        modconv: ``'auto'``, ``'fused'`` or ``'nonfused'`` modulated convolution.
        cuda_graph: capture the whole step (forward, backward, Adam, renormalisation) once as a CUDA graph and
            replay it; the w-noise of every step is drawn up front. Off the GPU the same static step runs
            eagerly. A capture failure warns once and falls back to eager steps (same numbers). ``'auto'``: on
            CUDA devices when every stage and loss is ``cuda_graph_safe`` (see ``resolve_cuda_graph``; the
            command line's default). ``graph_reason`` says what was decided and why.
        compile: ``torch.compile`` the synthesis network (True = inductor, or a backend name); a failure
            warns once and falls back to eager.
        channels_last: lay out the reduced-precision (bf16 / fp16) blocks' activations channels-last (what
            tensor-core convolutions read natively); no effect in fp32 / tf32.
        polish: with ``bf16`` / ``fp16``, the fraction of the steps, at the end, that run in full precision (what
            ``auto`` picks: ``tf32`` on recent GPUs, else ``fp32``), with the losses' targets prepared again at it.
            The last steps, at a falling learning rate, settle w where the rounding of 16-bit blocks (7 or 10
            mantissa bits) leaves it jittering; 0 (default) keeps one precision throughout. No effect in fp32/tf32.

    Attributes:
        done: steps taken so far (host int).
        hist: [steps, N, K+1] weighted per-term losses and the total, on the device.
    """

    def __init__(self, G, targets, *, degradations=(), losses=None, steps: int = 1000, latent_space: str = 'w',
                 optimize_noise: bool = True, lr: float = 0.1, init: dict | None = None, seed: int = 303,
                 precision: str = 'fp32', clean=None, indices=None, w_stats: tuple | None = None, device=None,
                 modconv: str = 'auto', cuda_graph: bool | str = False, compile=False, channels_last: bool = False,
                 polish: float = 0.0):
        if not (_real(steps) and isinstance(steps, int) and 1 <= steps <= MAX_STEPS):
            raise InversionError(f'steps: must be an integer in [1, {MAX_STEPS}], got {steps!r}')
        if not (_real(lr) and 0 <= lr < math.inf):
            raise InversionError(f'lr: must be a finite number >= 0, got {lr!r}')
        if not (_real(polish) and 0 <= polish <= 1):
            raise InversionError(f'polish: must be a fraction of the steps in [0, 1], got {polish!r}')
        if not (isinstance(seed, np.integer) or _real(seed) and isinstance(seed, int)):
            raise InversionError(f'seed: must be an integer, got {seed!r}')
        device = usable_device(device, 'device') if device is not None else next(iter(G.parameters())).device
        target = _as_images(targets, 'targets', device)
        n, res = target.shape[0], G.img_resolution
        try:
            self.prec = _precision.Precision(_precision.resolve(precision, device), device)
            self.fused = resolve_modconv(modconv, device, n)
            self.pipe = pipeline(degradations).to(device)
            terms = build_losses(losses)
        except ValueError as e:
            raise InversionError(str(e)) from e
        self.terms = [t.to(device) for t in terms]
        want = self.pipe.output_size(res)
        if target.shape[1:] != (G.img_channels, want, want):
            raise InversionError(f'targets: shape {tuple(target.shape[1:])} does not match the degraded '
                                 f'generator output {(G.img_channels, want, want)}')
        self.clean = _as_images(clean, 'clean', device) if clean is not None else None
        indices = list(range(n)) if indices is None else [int(i) for i in indices]
        if len(indices) != n:
            raise InversionError(f'indices: {len(indices)} ids for {n} targets')

        w_avg, w_std = w_stats if w_stats is not None else _wstats.w_stats(G)
        self.w_avg = torch.as_tensor(np.asarray(w_avg), dtype=torch.float32, device=device).reshape(-1)
        self.w_std = float(w_std)
        gens = [_latents.image_generator(seed, i, device) for i in indices]
        try:
            self.lat = _latents.Latents(G, n, self.w_avg, latent_space, optimize_noise, gens, init)
        except ValueError as e:
            raise InversionError(str(e)) from e
        self.G, self.target, self.n, self.device, self.steps = G, target, n, device, steps
        self.indices = indices   # each image's id: its random draws follow it
        self.latent_space, self.seed, self.channels_last = latent_space, seed, bool(channels_last)
        # the precision of the last `polish` steps (none: the run keeps one precision)
        full = _precision.Precision(_precision.resolve('auto', device), device)
        k = round(float(polish) * steps) if self.prec.name in ('bf16', 'fp16') else 0
        self.polish_at, self._polish = (steps - k, full) if k else (steps, None)
        self.precision_label = self.prec.name + (f' (last {k} step{"s" * (k != 1)} {full.name})' if k else '')
        self.lrs, self.sigmas = _schedule.schedule(steps, self.w_std, lr, device)
        self.names = [t.name for t in self.terms]
        self.weights = torch.tensor([float(getattr(t, 'weight', 1.0)) for t in self.terms], device=device)
        with blame('before the first step', InversionError):
            self.mask = self.pipe.mask(torch.zeros(n, G.img_channels, res, res, device=device))
            with self.prec.autocast():
                for t in self.terms:
                    t.prepare(target, self.mask)
        self.opt = Adam(self.lat.params)
        self.scaler = _precision.LossScaler(device, self.prec.name == 'fp16')
        self.hist = torch.zeros(steps, n, len(self.terms) + 1, device=device)
        self.done = 0
        self._synth = G.synthesis
        if compile:
            self._synth = _compiled(G.synthesis, 'inductor' if compile is True else str(compile))
        # static step: device step counter and all w-noise drawn up front (what a CUDA graph needs)
        steps_modules = [d for d in self.pipe.stages if not d.simulate_only] + self.terms
        try:
            cuda_graph, self.graph_reason = resolve_cuda_graph(cuda_graph, device, steps_modules,
                                                               steps * self.lat.w.numel() * 4)
        except ValueError as e:
            raise InversionError(str(e)) from e
        self.static = bool(cuda_graph)
        self._graph = None
        self._want_graph = bool(cuda_graph) and device.type == 'cuda'
        self._lock = _graphs.device_lock(device) if self._want_graph else None   # looked up once, not per replay
        if self.static:
            self._wn = self.lat.w_noise_all(steps)
            self._step_t = torch.zeros(1, dtype=torch.long, device=device)

    # ---- the step -------------------------------------------------------------------------------------------
    def synth(self, ws: torch.Tensor, force_fp32: bool = True) -> torch.Tensor:
        """G.synthesis with this batch's noise buffers, modulated-conv choice and the precision's reduced dtype
        (used where ``force_fp32`` is False): [N,num_ws,D] -> [N,C,R,R]."""
        return self._synth(ws, noise_mode='const', noise=self.lat.noise, force_fp32=force_fp32,
                           fused_modconv=self.fused, half_dtype=self.prec.half_dtype,
                           channels_last=self.channels_last)

    def _terms(self, w_synth: torch.Tensor, w: torch.Tensor, cache: bool = True) -> torch.Tensor:
        """[N, K] the weighted loss terms of the image G makes from ``w_synth``, the losses seeing latent ``w``."""
        from ganinv_core.hooks import LossContext
        lat = self.lat
        img = self.synth(lat.ws(w_synth), self.prec.force_fp32)
        with self.prec.autocast(cache):
            ctx = LossContext(pred=self.pipe(img), target=self.target, mask=self.mask, image=img, w=w,
                              w_avg=self.w_avg, w_std=self.w_std, noise=list(lat.noise.values()), w_init=lat.w_init)
            return torch.stack([t(ctx).float().reshape(self.n) for t in self.terms], 1) * self.weights

    @torch.no_grad()
    def evaluate(self, w: torch.Tensor | None = None) -> torch.Tensor:
        """[N] the total loss at latent ``w`` ([N, 1 | rows, w_dim]; default the current one), without the step's
        latent noise and without taking a step."""
        w = self.lat.w if w is None else w.to(self.device).expand_as(self.lat.w)
        with self.prec.mode():
            return self._terms(w, w, cache=False).sum(1)

    def _body(self, i, cache: bool = True) -> None:
        """One step at index ``i`` (host int, or a [1] device tensor in the static step)."""
        lat = self.lat
        if isinstance(i, int):
            wn, sigma, lr = lat.w_noise(i), self.sigmas[i], self.lrs[i]
        else:
            wn, sigma, lr = (x.index_select(0, i)[0] for x in (self._wn, self.sigmas, self.lrs))
        per = self._terms(lat.w + wn * sigma, lat.w, cache)   # [N, K]
        total = per.sum(1)
        row = torch.cat([per, total[:, None]], 1).detach()
        if isinstance(i, int):
            self.hist[i] = row
        else:
            self.hist.index_copy_(0, i, row[None])
        (total.sum() * self.scaler.scale).backward()
        self.opt.step(lr, self.scaler.unscale(lat.params))
        lat.renormalise()

    def step(self) -> None:
        """Advance one optimisation step (no host sync)."""
        if self.done >= self.steps:
            raise InversionError(f'step: all {self.steps} steps are done')
        try:   # free when nothing raises; the message is made only for a plugin's bug
            self._step()
        except Exception as e:
            named = blamed(e, f'at step {self.done + 1}', InversionError)
            if named is None:
                raise
            raise named from e
        self.done += 1

    def _step(self) -> None:
        if self.done == self.polish_at and self._polish is not None:
            self._switch_precision(self._polish)
        with self.prec.mode():
            if self._want_graph and self._graph is None:   # captured (and replayed) on the run's GPU
                self._graph, why = _graphs.capture(self)
                self._want_graph = self._graph is not None
                if why:
                    _warn_once('graph', f'cuda_graph: capture failed ({why}); running eagerly')
            if self._graph is not None:
                _graphs.replay(self._graph, self.device, self._lock)
            elif self.static:
                self._body(self._step_t)
                self.opt.zero_grad()
                self._step_t.add_(1)
            else:
                self._body(self.done)
                self.opt.zero_grad()

    def _switch_precision(self, prec: _precision.Precision) -> None:
        """Run the remaining steps at ``prec``: the losses' targets prepared again at it, and (with ``cuda_graph``)
        the step captured again on its next call."""
        self.prec, self._polish = prec, None
        with prec.mode(), prec.autocast():
            for t in self.terms:
                t.prepare(self.target, self.mask)
        if self._graph is not None:
            _graphs.release(self._graph)
            self._graph, self._want_graph = None, True

    def run(self, k: int) -> None:
        """``k`` steps (fewer if the run ends first)."""
        for _ in range(min(k, self.steps - self.done)):
            self.step()

    # ---- reading it out -------------------------------------------------------------------------------------
    def losses(self, first: int) -> torch.Tensor:
        """Host copy [done - first, N, K+1] of the loss rows since ``first``; raises on a non-finite one."""
        chunk = self.hist[first:self.done].cpu()
        _check_finite(chunk, first, self.names)
        return chunk

    def render(self) -> torch.Tensor:
        """The current restoration [N,C,R,R] float32 in [-1, 1] (no w-noise)."""
        with torch.no_grad(), self.prec.mode():
            return self.synth(self.lat.ws()).float()

    def result(self, wall: float, lpips_vgg=None, arcface=None, images: torch.Tensor | None = None) -> Result:
        """The ``Result`` after the steps taken (``wall``: seconds they took); the metrics' networks default to the
        losses' (vgg16's VGG, identity's ArcFace and its reference embedding). ``images``: the restorations
        [N,C,R,R] to report instead of the latents' (pivotal tuning's)."""
        lat = self.lat
        if not all(torch.isfinite(p).all() for p in lat.params):
            raise InversionError('latents: became NaN/inf during the optimisation')
        images = self.render() if images is None else images.to(self.device, torch.float32)
        with torch.no_grad(), blame('degrading the restoration', InversionError):
            degraded = self.pipe(images)
        hist = self.hist[:self.done]
        history = {k: hist[:, :, j].cpu().numpy() for j, k in enumerate(self.names + ['total'])}
        rate = self.done / max(wall, 1e-9)
        vgg = lpips_vgg if lpips_vgg is not None else next(
            (t.vgg for t in self.terms if getattr(t, 'vgg', None) is not None), None)
        ident = next((t for t in self.terms if getattr(t, 'arcface', None) is not None), None)
        arc = arcface if arcface is not None else getattr(ident, 'arcface', None)
        # the references' embedding, where the metric's network is the one that made it
        ref = ident.anchor if ident is not None and arc is ident.arcface \
            and getattr(ident, 'references', None) is not None else None
        metrics = image_metrics(images, degraded, self.target, self.clean, self.mask, history, rate, wall, vgg,
                                arc, ref)
        return Result(images=images.cpu(), degraded=degraded.cpu(), targets=self.target.cpu(),
                      clean=None if self.clean is None else self.clean.cpu(),
                      w=lat.ws().detach().cpu().contiguous(),
                      noise={k: v.detach().cpu() for k, v in lat.noise.items()},
                      history=history, metrics=metrics, latent_space=self.latent_space, steps=self.done,
                      seed=self.seed, precision=self.precision_label, wall_time=wall, steps_per_second=rate,
                      mask=None if self.mask is None else self.mask.cpu(), step_mode=self.step_mode())

    def step_mode(self) -> str:
        """How the steps ran so far: ``'cuda graph'``, else ``'eager'`` or ``'static, eager'`` and why."""
        if self._graph is not None:
            return 'cuda graph'
        if self.static:
            why = 'the capture failed' if self.device.type == 'cuda' else f'{self.device.type} is not a CUDA device'
            return f'static, eager ({why})'
        return f'eager ({self.graph_reason})'

    def state(self) -> list[torch.Tensor]:
        """Every tensor a step changes (latents, Adam moments and counter, loss scale, step counter, history)."""
        return self.lat.params + self.opt.state() + self.scaler.state() + [self._step_t, self.hist]  # static only


_WARNED: set = set()


def _warn_once(key: str, msg: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def _compiled(module, backend: str):
    """``torch.compile(module)`` that falls back to ``module`` (with one warning) when compiling fails."""
    try:
        fast = torch.compile(module, backend=backend)
    except Exception as e:  # noqa: BLE001 - an optional speed-up must never stop a run
        _warn_once('compile', f'compile: torch.compile failed ({exc_line(e)}); running eagerly')
        return module
    state = {'ok': True}

    def call(*args, **kwargs):
        if state['ok']:
            try:
                return fast(*args, **kwargs)
            except Exception as e:  # noqa: BLE001
                state['ok'] = False
                _warn_once('compile', f'compile: the compiled synthesis failed ({exc_line(e)}); running eagerly')
        return module(*args, **kwargs)
    return call

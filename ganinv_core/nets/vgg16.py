"""LPIPS-style VGG16 perceptual trunk (the distance NVIDIA's projector minimises), written natively.

``VGG16Features()(img)`` takes NCHW images in [0, 255] and returns [N, F] features such that
``(f1 - f2).square().sum(1)`` is the LPIPS(VGG) distance:

    d(x, y) = sum_l 1/(H_l W_l) sum_hw sum_c w_lc (xhat_lchw - yhat_lchw)^2,
    xhat_l = relu_l(x) / ||relu_l(x)||_channels,  l in relu1_2, relu2_2, relu3_3, relu4_3, relu5_3,

so each level is scaled by sqrt(w_lc / (H_l W_l)) and flattened. Weights come from NVIDIA's ``vgg16.pt``
(a TorchScript archive read without running any of its code), from a torchvision VGG16 state dict plus
LPIPS linear heads, or are random (``source='random'``) for tests and benchmarks.
"""
from __future__ import annotations

import io
import os
import pickle
import zipfile

import torch
import torch.nn.functional as F
from torch import nn

from ._files import read_state_dict

NVIDIA_URL = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt'
#: (in, out) channels of the 13 convolutions; 'M' = 2x2 max pool.
CFG = [(3, 64), (64, 64), 'M', (64, 128), (128, 128), 'M', (128, 256), (256, 256), (256, 256), 'M',
       (256, 512), (512, 512), (512, 512), 'M', (512, 512), (512, 512), (512, 512)]
TAPS = (1, 3, 6, 9, 12)          # conv indices whose ReLU output is a feature level (relu1_2 ... relu5_3)
CHANNELS = (64, 128, 256, 512, 512)
# LPIPS scaling layer, defined on [-1, 1] inputs (torchvision's ImageNet mean/std, re-expressed).
SHIFT, SCALE = (-0.030, -0.088, -0.188), (0.458, 0.448, 0.450)


class VGG16Error(ValueError):
    """VGG16 weights cannot be found, downloaded or read (one line naming the file and what to do)."""


class VGG16Features(nn.Module):
    """LPIPS(VGG16) feature extractor: ``forward(img_0_255 [N,3,H,W]) -> [N, F]`` (see the module docstring).

    ``channels_last``: run the trunk in NHWC memory (the same values). Off: although cuDNN's tensor-core kernels
    are NHWC (NCHW activations are transposed in and out of each convolution), NHWC measured slower on an H200
    (bf16, 256², batch 8: 10.10 vs 9.35 ms forward+backward; a whole 1024² step 47.8 vs 47.4 ms).
    """
    channels_last: bool = False

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, padding=1) for i, o in (c for c in CFG if c != 'M'))
        for k, c in enumerate(CHANNELS):
            self.register_buffer(f'lin{k}', torch.ones(c))
        self.register_buffer('shift', torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer('scale', torch.tensor(SCALE).view(1, 3, 1, 1))

    @property
    def lins(self) -> list[torch.Tensor]:
        return [getattr(self, f'lin{k}') for k in range(len(CHANNELS))]

    def levels(self, img: torch.Tensor) -> list[torch.Tensor]:
        """The five ReLU feature maps [N, C_l, H_l, W_l] of images in [0, 255]."""
        x = (img / 127.5 - 1 - self.shift) / self.scale
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out, i = [], 0
        for c in CFG:
            if c == 'M':
                x = F.max_pool2d(x, 2)
                continue
            x = F.relu(self.convs[i](x))
            if i in TAPS:
                out.append(x)
            i += 1
        return out

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        feats = []
        for f, w in zip(self.levels(img), self.lins):
            # float32 from here on (a no-op unless autocast ran the convolutions in bf16/fp16): the norm and the
            # distance built on these features are where low precision would cost the most accuracy
            f = f.float()
            f = f / (torch.linalg.vector_norm(f, dim=1, keepdim=True) + 1e-10)  # unit norm over channels
            g = (w.clamp(min=0) / (f.shape[2] * f.shape[3])).sqrt()              # sqrt(w_c / HW)
            feats.append((f * g.view(1, -1, 1, 1)).flatten(1))
        return torch.cat(feats, 1)

    def distance(self, img: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
        """[N] LPIPS distance of images in [0, 255] to target features (``self(target_img)``, [N or 1, F]).

        The value of ``(target_features - self(img)).square().sum(1)``, computed level by level with
        ``ops.lpips_distance`` (one kernel per level forward and one backward, instead of the normalise-weight-
        concatenate-subtract chain), without building img's [N, F] feature matrix.
        """
        from ..ops import lpips_distance
        levels = self.levels(img)
        n, size = levels[0].shape[0], sum(f[0].numel() for f in levels)
        if target_features.ndim != 2 or target_features.shape[1] != size or target_features.shape[0] not in (1, n):
            raise VGG16Error(f'target features must be [{n} or 1, {size}] for these {n} image(s) of '
                             f'{img.shape[-2]}x{img.shape[-1]}, got {tuple(target_features.shape)}')
        dist, off = None, 0
        for f, w in zip(levels, self.lins):
            c, h, ww = f.shape[1:]
            t = target_features[:, off:off + c * h * ww].view(-1, c, h, ww).expand(n, -1, -1, -1)
            off += c * h * ww
            d = lpips_distance(f, t, (w.clamp(min=0) / (h * ww)).sqrt()).sum((1, 2))
            dist = d if dist is None else dist + d
        return dist

    def set_weights(self, convs: list[tuple[torch.Tensor, torch.Tensor]], lins: list[torch.Tensor]) -> 'VGG16Features':
        """Copy 13 (weight [O,I,3,3], bias [O]) pairs and 5 LPIPS head vectors [C] in; checks every shape."""
        if len(convs) != 13 or len(lins) != 5:
            raise VGG16Error(f'expected 13 convolutions and 5 LPIPS heads, got {len(convs)} and {len(lins)}')
        with torch.no_grad():
            for conv, (w, b) in zip(self.convs, convs):
                if w.shape != conv.weight.shape or b.numel() != conv.bias.numel():
                    raise VGG16Error(f'convolution shape {tuple(w.shape)} does not match VGG16 {tuple(conv.weight.shape)}')
                conv.weight.copy_(w)
                conv.bias.copy_(b.reshape(-1))
            for buf, w in zip(self.lins, lins):
                if w.numel() != buf.numel():
                    raise VGG16Error(f'LPIPS head of {w.numel()} values does not match {buf.numel()} channels')
                buf.copy_(w.reshape(-1))
        return self


# ---------------------------------------------------------------------------------------------------------
# Sources.

def random_vgg16(seed: int = 0) -> VGG16Features:
    """Seeded random weights (He-normal convolutions, positive heads): for tests and benchmarks."""
    g = torch.Generator().manual_seed(seed)
    convs = [(torch.randn(o, i, 3, 3, generator=g) * (2 / (9 * i)) ** 0.5, torch.randn(o, generator=g) * 0.01)
             for i, o in (c for c in CFG if c != 'M')]
    return VGG16Features().set_weights(convs, [torch.rand(c, generator=g) for c in CHANNELS])


class _TSObject:
    """Stand-in for a TorchScript object: keeps its attributes, runs nothing."""

    def __setstate__(self, state):
        self.state = state


class _TorchScriptReader(pickle.Unpickler):
    """Reads the attribute tree of a TorchScript archive; only tensor and container constructors allowed."""
    _DTYPES = {f'{n}Storage': getattr(torch, d) for n, d in [('Float', 'float32'), ('Double', 'float64'),
               ('Half', 'float16'), ('BFloat16', 'bfloat16'), ('Long', 'int64'), ('Int', 'int32'),
               ('Short', 'int16'), ('Char', 'int8'), ('Byte', 'uint8'), ('Bool', 'bool')]}

    def __init__(self, zf: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(zf.read(f'{prefix}data.pkl')))
        self.zf, self.prefix = zf, prefix

    def find_class(self, module, name):
        if module.startswith('__torch__'):
            return _TSObject
        if module == 'torch' and name in self._DTYPES:
            return self._DTYPES[name]
        if (module, name) == ('torch._utils', '_rebuild_tensor_v2'):
            return lambda flat, offset, size, stride, *a: flat.as_strided(size, stride, offset)
        if (module, name) == ('torch._utils', '_rebuild_parameter'):
            return lambda t, *a: t
        if (module, name) == ('collections', 'OrderedDict'):
            return dict
        if module == 'torch.jit._pickle' and name.startswith('build_'):
            return lambda x: x
        raise pickle.UnpicklingError(f'{module}.{name} is not allowed in a weights file')

    def persistent_load(self, pid):
        _, dtype, key, _location, _numel = pid
        data = bytearray(self.zf.read(f'{self.prefix}data/{key}'))
        return torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)


def read_torchscript_tensors(path: str) -> list[tuple[str, torch.Tensor]]:
    """(attribute path, tensor) of every tensor in a TorchScript archive, in file order; no code is run."""
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = [n for n in zf.namelist() if n.endswith('/data.pkl') and n.count('/') == 1]
            if not pkl:
                raise VGG16Error(f'{path}: not a TorchScript archive (no data.pkl)')
            root = _TorchScriptReader(zf, pkl[0][:-len('data.pkl')]).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, KeyError, EOFError, TypeError) as e:
        raise VGG16Error(f'{path}: cannot read it as a TorchScript archive ({e})') from None
    out = []

    def walk(obj, name):
        if isinstance(obj, torch.Tensor):
            out.append((name, obj.clone()))
        elif isinstance(obj, _TSObject):
            walk(getattr(obj, 'state', {}), name)
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f'{name}.{k}' if name else str(k))
        elif isinstance(obj, (list, tuple)):
            for k, v in enumerate(obj):
                walk(v, f'{name}.{k}')
    walk(root, '')
    return out


def _match(tensors: list[tuple[str, torch.Tensor]], where: str):
    """Pick 13 convolutions (+ biases) and 5 LPIPS heads out of named tensors, by order and shape."""
    used, convs = set(), []
    for i, o in (c for c in CFG if c != 'M'):
        k = next((k for k, (_, t) in enumerate(tensors) if k not in used and tuple(t.shape) == (o, i, 3, 3)), None)
        if k is None:
            raise VGG16Error(f'{where}: no {o}x{i}x3x3 convolution weight found; is this a VGG16?')
        used.add(k)
        name = tensors[k][0]
        # the bias: same name with "bias", else the next unused vector of length o
        alt = name[:-len('weight')] + 'bias' if name.endswith('weight') else None
        cand = [j for j, (n, t) in enumerate(tensors) if n == alt] or \
               [j for j, (_, t) in enumerate(tensors) if j > k and j not in used and t.dim() == 1 and t.numel() == o]
        if not cand:
            raise VGG16Error(f'{where}: no bias found for convolution {name!r}')
        used.add(cand[0])
        convs.append((tensors[k][1].float(), tensors[cand[0]][1].float()))
    lins = []
    for c in CHANNELS:
        k = next((k for k, (_, t) in enumerate(tensors) if k not in used and t.numel() == c
                  and t.dim() >= 1 and max(t.shape) == c and t.is_floating_point()), None)
        if k is None:
            raise VGG16Error(f'{where}: no LPIPS linear head with {c} channels found')
        used.add(k)
        lins.append(tensors[k][1].float())
    return convs, lins


def _load_state_dict(path: str) -> dict:
    return read_state_dict(path, path, VGG16Error)


def _lpips_package_heads() -> str | None:
    """weights/v0.1/vgg.pth of the ``lpips`` package, when it is installed."""
    import importlib.util
    spec = importlib.util.find_spec('lpips')
    if spec and spec.submodule_search_locations:
        p = os.path.join(list(spec.submodule_search_locations)[0], 'weights', 'v0.1', 'vgg.pth')
        return p if os.path.isfile(p) else None
    return None


def from_torchvision(path: str, heads: str | None = None) -> VGG16Features:
    """torchvision VGG16 (``features.{0,2,5,...}.weight``) + LPIPS heads (``lin{k}.model.1.weight`` [1,C,1,1]).

    The heads may sit in the same file, in ``heads``, or come from the installed ``lpips`` package.
    """
    sd = _load_state_dict(path)
    feats = sorted({int(k.split('.')[1]) for k in sd if k.startswith('features.') and k.endswith('.weight')})
    if len(feats) < 13:
        raise VGG16Error(f'{path}: expected torchvision VGG16 keys features.N.weight for 13 convolutions, found {len(feats)}')
    convs = [(sd[f'features.{i}.weight'].float(), sd[f'features.{i}.bias'].float()) for i in feats[:13]]
    if not any(k.startswith('lin0.') for k in sd):
        heads = heads or _lpips_package_heads()
        if heads is None:
            raise VGG16Error(f'{path}: no LPIPS linear heads; pass them as "{path}+vgg.pth" (the lpips package\'s '
                             'weights/v0.1/vgg.pth) or install lpips')
        sd = {**sd, **_load_state_dict(heads)}
    try:
        lins = [next(v for k, v in sd.items() if k.startswith(f'lin{j}.') and k.endswith('weight')).float()
                for j in range(5)]
    except StopIteration:
        raise VGG16Error(f'{heads or path}: expected LPIPS keys lin0..lin4 (lin{{k}}.model.1.weight)') from None
    try:
        return VGG16Features().set_weights(convs, lins)
    except VGG16Error as e:
        raise VGG16Error(f'{path}: {e}') from None


def from_nvidia(path: str) -> VGG16Features:
    """NVIDIA's ``vgg16.pt`` (TorchScript): tensors taken by order and shape, never executed."""
    return VGG16Features().set_weights(*_match(read_torchscript_tensors(path), path))


def download(url: str) -> str:
    """The local copy of ``url`` in ganinv's download cache (the generators' cache: atomic, sha256-checked).

    Raises:
        VGG16Error: the download failed; says which file to supply instead.
    """
    from ganinv_core.weights import WeightsError, _hub
    try:
        return _hub.fetch(url, label='VGG16 weights')
    except WeightsError as e:
        name = os.path.basename(url.rstrip('/')) or 'vgg16.pt'
        raise VGG16Error(f'{str(e).partition("; if offline")[0]}; offline? fetch {name} elsewhere and pass its '
                         f'path (--loss vgg16:weights=/path/to/{name}) or copy it to {_hub.cached_path(url)}') from None


def load_vgg16(source: str | None = None, device: torch.device | str = 'cpu') -> VGG16Features:
    """A frozen ``VGG16Features`` in eval mode on ``device``.

    Args:
        source: ``None`` / ``'nvidia'``: NVIDIA's vgg16.pt, downloaded once into ``$GANINV_CACHE`` or
            ``~/.cache/ganinv``; ``'random'`` / ``'random:<seed>'``: seeded random weights; a path to a
            TorchScript ``vgg16.pt``; a path to a torchvision VGG16 state dict, optionally ``'tv.pth+heads.pth'``
            with the LPIPS linear heads; a ``http(s)://`` URL of a vgg16.pt.

    Raises:
        VGG16Error: the file is missing, unreadable, not a VGG16, or cannot be downloaded.
    """
    src = source or 'nvidia'
    if src == 'random' or src.startswith('random:'):
        try:
            net = random_vgg16(int(src.partition(':')[2] or 0))
        except ValueError:
            raise VGG16Error(f'VGG16 source {source!r}: expected random or random:<integer seed>') from None
    else:
        if src == 'nvidia' or src.startswith(('http://', 'https://')):
            src = download(NVIDIA_URL if src == 'nvidia' else src)
        path, _, heads = src.partition('+')
        for p in filter(None, (path, heads)):
            if not os.path.isfile(p):
                raise VGG16Error(f'VGG16 weights {p!r}: no such file (pass NVIDIA\'s vgg16.pt, or a torchvision '
                                 'VGG16 state dict + LPIPS heads, or "random")')
        is_ts = False
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:  # a TorchScript archive carries code/ and constants.pkl
                is_ts = any(n.endswith(('/constants.pkl', '/code/__torch__.py')) for n in zf.namelist())
        net = from_nvidia(path) if is_ts else from_torchvision(path, heads or None)
    return net.eval().requires_grad_(False).to(device)

"""ArcFace identity embeddings: insightface's ``arcface_torch`` IResNet, for the identity loss and metric.

``load_arcface(path)`` reads an ``arcface_torch`` backbone (``backbone.pth``, a plain state dict: read with
``torch.load(weights_only=True)``, nothing in it runs) of any depth (r18, r34, r50, r100, r200: the depth is read
from the file). ``net.embed(img)`` takes FFHQ-aligned faces in [-1, 1] at any size, cuts out the square ArcFace's
112x112 crops cover (``ARCFACE_BOX``), and returns unit 512-d embeddings; the identity similarity of two faces is
the cosine of theirs. The network is trained on RGB faces normalised as ``x / 127.5 - 1``, our [-1, 1].
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from ._files import read_state_dict

#: arcface_torch's named depths: blocks per stage.
DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 200: (6, 26, 60, 6)}
WIDTHS = (64, 128, 256, 512)
SIZE = 112

# Where ArcFace's crop sits in an FFHQ-aligned crop of side 1. ArcFace aligns 5 points to fixed places in its
# 112x112 crop: eye midpoint E = (55.91, 51.60), mouth midpoint M = (56.14, 92.28) (the means of its template's
# eye and mouth-corner points). FFHQ's crop (io/_ffhq.ffhq_quad) is 3.6 |EM| wide when the mouth lies more than
# 1.11 eye distances below the eyes, as in that template, with E 0.1 |EM| above its centre: E at (1/2, 1/2 - 1/36),
# M at (1/2, 3/4). So one FFHQ side is |EM| / (1/4 + 1/36) = 146.4 ArcFace pixels, and the 112 crop is
# (x0, y0, side) below. The template's 0.3 degree tilt is ignored.
_E, _M = (55.91, 51.60), (56.14, 92.28)
_SCALE = (_M[1] - _E[1]) / (0.25 + 1 / 36)
ARCFACE_BOX = (0.5 - _E[0] / _SCALE, 0.5 - 1 / 36 - _E[1] / _SCALE, SIZE / _SCALE)


class ArcFaceError(ValueError):
    """ArcFace weights cannot be found or read, or are not an IResNet (one line naming the file and the reason)."""


class _Block(nn.Module):
    """Pre-activation residual block: BN, conv 3x3, BN, PReLU, conv 3x3 (strided), BN, plus the shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.bn2, self.bn3 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.downsample = None if stride == 1 and cin == cout else \
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return y + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """arcface_torch's IResNet (its state-dict names): 112x112 RGB in [-1, 1] -> [N, features] embedding.

    Args:
        blocks: residual blocks in each of the four stages (``DEPTHS[50]`` for r50); each stage halves the side.
        features: embedding size.
    """

    def __init__(self, blocks=DEPTHS[50], features: int = 512):
        super().__init__()
        self.blocks = tuple(blocks)
        self.conv1, self.bn1, self.prelu = nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
        cin = 64
        for k, (cout, n) in enumerate(zip(WIDTHS, self.blocks), 1):
            self.add_module(f'layer{k}', nn.Sequential(*(_Block(cin if i == 0 else cout, cout, 2 if i == 0 else 1)
                                                         for i in range(n))))
            cin = cout
        side = SIZE // 16
        self.bn2 = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin * side * side, features)
        self.features = nn.BatchNorm1d(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N,3,112,112] in [-1, 1] -> [N, features] (not normalised)."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.features(self.fc(self.bn2(x).flatten(1)))

    def embed(self, img: torch.Tensor) -> torch.Tensor:
        """Unit identity embeddings [N, features] of FFHQ-aligned faces [N,C,S,S] in [-1, 1] (C = 1: grey).

        The ArcFace square is cut out of the face and resized to 112 (antialiased bilinear: differentiable).
        """
        if img.ndim != 4 or img.shape[1] not in (1, 3) or img.shape[-1] != img.shape[-2]:
            raise ArcFaceError(f'embed: expected square faces [N,1|3,S,S], got {tuple(img.shape)}')
        s = img.shape[-1]
        x0, y0, side = (round(v * s) for v in ARCFACE_BOX)
        crop = img[..., max(y0, 0):y0 + side, max(x0, 0):x0 + side].expand(-1, 3, -1, -1)
        crop = F.interpolate(crop, size=(SIZE, SIZE), mode='bilinear', antialias=True, align_corners=False)
        return F.normalize(self(crop).float(), dim=1)


def random_arcface(seed: int = 0, blocks=DEPTHS[18]) -> IResNet:
    """Seeded random weights (He-normal convolutions, unit BatchNorm statistics): for tests and benchmarks."""
    g = torch.Generator().manual_seed(seed)
    net = IResNet(blocks)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2 / m.weight[0].numel()) ** 0.5)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.weight.shape[1] ** 0.5)
    return net


def _read(path: str) -> dict:
    what = f'ArcFace weights {path!r}'
    sd = read_state_dict(path, what, ArcFaceError)
    odd = next((k for k, v in sd.items() if not isinstance(v, torch.Tensor)), None)
    if odd is not None:
        raise ArcFaceError(f'{what}: expected a state dict of tensors, {odd!r} is a {type(sd[odd]).__name__}')
    return {k.removeprefix('module.'): v for k, v in sd.items()}   # saved from DistributedDataParallel


def from_state_dict(sd: dict, where: str = 'state dict') -> IResNet:
    """An IResNet with ``sd``'s depth and embedding size, its weights loaded strictly (every name and shape)."""
    blocks = tuple(len({k.split('.')[1] for k in sd if k.startswith(f'layer{i}.')}) for i in range(1, 5))
    if 'fc.weight' not in sd or not all(blocks):
        raise ArcFaceError(f'{where}: not an arcface_torch IResNet (no fc.weight, or stage blocks {blocks}); '
                           'expected insightface arcface_torch backbone.pth')
    net = IResNet(blocks, sd['fc.weight'].shape[0])
    own = net.state_dict()
    missing = sorted(k for k in own.keys() - sd.keys() if not k.endswith('num_batches_tracked'))  # unused in eval
    extra = sorted(sd.keys() - own.keys())
    bad = next((k for k in own if k in sd and sd[k].shape != own[k].shape), None)
    if missing or extra or bad:
        why = (f'missing {missing[0]!r} (and {len(missing) - 1} more)' if missing else
               f'unexpected {extra[0]!r} (and {len(extra) - 1} more)' if extra else
               f'{bad!r} is {tuple(sd[bad].shape)}, expected {tuple(own[bad].shape)} (not a 112x112 IResNet?)')
        raise ArcFaceError(f'{where}: does not match an IResNet with stage blocks {blocks}: {why}')
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=False)
    return net


_SHARED: dict = {}


def shared_arcface(source: str, device: torch.device | str = 'cpu') -> IResNet:
    """``load_arcface``, loaded once per (source, device) and shared (it is frozen)."""
    key = (source, str(torch.device(device)))
    if key not in _SHARED:
        _SHARED[key] = load_arcface(source, device)
    return _SHARED[key]


def load_arcface(source: str, device: torch.device | str = 'cpu') -> IResNet:
    """A frozen IResNet in eval mode on ``device``.

    Args:
        source: path to an insightface ``arcface_torch`` backbone state dict (e.g. ``ms1mv3_arcface_r50_fp16/
            backbone.pth``), or ``'random'`` / ``'random:<seed>'`` (an r18 with seeded random weights, for tests).

    Raises:
        ArcFaceError: the file is missing, unreadable, or not an IResNet.
    """
    if source == 'random' or source.startswith('random:'):
        try:
            net = random_arcface(int(source.partition(':')[2] or 0))
        except ValueError:
            raise ArcFaceError(f'ArcFace source {source!r}: expected random or random:<integer seed>') from None
    elif not os.path.isfile(source):
        raise ArcFaceError(f'ArcFace weights {source!r}: no such file (pass an insightface arcface_torch '
                           'backbone.pth, e.g. ms1mv3_arcface_r50_fp16/backbone.pth)')
    else:
        net = from_state_dict(_read(source), f'ArcFace weights {source!r}')
    return net.eval().requires_grad_(False).to(device)

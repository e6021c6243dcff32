"""Inpainting: a binary mask (PNG, box, centred square or seeded free-form strokes); holes are black (-1)."""
import math
import os

import numpy as np
import torch

from ganinv_core.hooks import Degradation, Param


def box_mask(size: int, x0: float, y0: float, x1: float, y1: float) -> torch.Tensor:
    """[size, size], 1 outside the box whose corners are fractions of the side."""
    m = torch.ones(size, size)
    r = [round(v * size) for v in (x0, y0, x1, y1)]
    m[r[1]:r[3], r[0]:r[2]] = 0
    return m


def stroke_mask(size: int, seed: int, strokes: int, width: float) -> torch.Tensor:
    """[size, size] free-form mask: ``strokes`` random polylines of thick discs, 0 under the strokes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    hole = np.zeros((size, size), bool)
    rad = max(width * size / 2, 0.5)
    for _ in range(strokes):
        p = rng.uniform(0, size, 2)
        for _ in range(rng.integers(3, 8)):  # vertices of one polyline
            ang, length = rng.uniform(0, 2 * math.pi), rng.uniform(0.1, 0.3) * size
            q = np.clip(p + length * np.array([math.cos(ang), math.sin(ang)]), 0, size - 1)
            for t in np.linspace(0, 1, max(2, int(length / rad) + 1)):  # discs along the segment
                c = p + t * (q - p)
                hole |= (xx - c[0]) ** 2 + (yy - c[1]) ** 2 <= rad ** 2
            p = q
    return torch.from_numpy(~hole).float()


def read_mask_image(path: str):
    """The grey (``L``) PIL image of a mask file, read now so that a bad file fails at construction.

    Raises:
        ValueError: the file cannot be read as an image.
    """
    from PIL import Image
    try:
        with Image.open(path) as im:
            return im.convert('L')
    except OSError as e:
        raise ValueError(f'inpaint mask {path!r}: cannot read it as an image ({e})') from None


def file_mask(image, size: int) -> torch.Tensor:
    """[size, size] from a grey mask image (nearest-resized to the side): white (> 127) = known."""
    from PIL import Image
    if image.size != (size, size):
        image = image.resize((size, size), Image.NEAREST)
    return torch.from_numpy(np.asarray(image) > 127).float()


class Inpaint(Degradation):
    """Holes from a mask (1 = known) set to black (-1); ``mask`` tells the losses which pixels are known.

    The mask is built once per image side and shared by every image of a batch.
    """
    name = 'inpaint'
    help = 'remove a region (mask file, box, centred square or random strokes); holes are black and carry no loss'
    cuda_graph_safe = True
    affine = True
    params = (Param('mode', str, 'center', 'kind of mask', ('file', 'box', 'center', 'strokes')),
              Param('path', str, None, 'mode=file: mask image, white = known'),
              Param('box', str, '0.25:0.25:0.75:0.75', 'mode=box: x0:y0:x1:y1 as fractions of the side'),
              Param('size', float, 0.4, 'mode=center: side of the centred square, fraction of the image side'),
              Param('strokes', int, 4, 'mode=strokes: number of strokes', bounds=(0, 256)),
              Param('width', float, 0.06, 'mode=strokes: stroke width, fraction of the image side'),
              Param('seed', int, 0, 'mode=strokes: random seed', bounds=(0, 2 ** 32 - 1)))

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.mode == 'file':
            if not (self.path and os.path.isfile(self.path)):
                raise self.fail('path', 'must name an existing mask image when mode=file')
            self._image = read_mask_image(self.path)
            if self._image.getextrema()[1] <= 127:
                raise self.fail('path', 'marks no pixel as known (white = known, black = damage): nothing to '
                                'restore from')
        if self.mode == 'box':
            try:
                self._box = [float(v) for v in self.box.split(':')]
            except ValueError:
                self._box = []
            x0, y0, x1, y1 = self._box if len(self._box) == 4 else (0, 0, 0, 0)
            if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
                raise self.fail('box', 'must be x0:y0:x1:y1 with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1')
        if self.mode == 'center' and not 0 < self.size <= 1:
            raise self.fail('size', 'must be in (0, 1]')
        if self.mode == 'strokes' and not 0 < self.width <= 1:
            raise self.fail('width', 'must be in (0, 1]')
        self._cache = {}

    def _mask2d(self, x: torch.Tensor) -> torch.Tensor:
        """[size, size] mask of the configured mode for x's side, on x's device in x's dtype, cached (no host copy
        per step: CUDA-graph safe)."""
        size = x.shape[-1]
        key = (size, x.device, x.dtype)
        if key not in self._cache:
            h = (1 - self.size) / 2
            m = {'file': lambda: file_mask(self._image, size),
                 'box': lambda: box_mask(size, *self._box),
                 'center': lambda: box_mask(size, h, h, 1 - h, 1 - h),
                 'strokes': lambda: stroke_mask(size, self.seed, self.strokes, self.width)}[self.mode]()
            self._cache[key] = m.to(x.device, x.dtype)
        return self._cache[key]

    def mask(self, x):
        """[N,1,H,W], 1 = known."""
        m = self._mask2d(x)
        return m.expand(x.shape[0], 1, *m.shape)

    def forward(self, x):
        """x where known, -1 (black) in the holes: m * (x + 1) - 1."""
        return self._mask2d(x) * (x + 1) - 1

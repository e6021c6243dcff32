"""Deblurring: a Gaussian blur (sigma, size) or a kernel read from an image or a ``.npy`` file."""
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from ganinv_core.hooks import Degradation, Param
from ganinv_core.metrics import gaussian_window

MAX_SIZE = 1025   # the largest kernel side (odd): already wider than a 1024² image


def gaussian_kernel(sigma: float, size: int) -> torch.Tensor:
    """[size, size] normalised, centred Gaussian: the outer product of the 1-D window with itself."""
    g = gaussian_window(size, sigma)
    return g[:, None] * g[None, :]


def read_kernel(path: str) -> torch.Tensor:
    """A 2-D kernel from ``.npy`` (no pickles) or an image (converted to grey), normalised to sum 1.

    Raises:
        ValueError: the file cannot be read, or is not a finite, non-negative 2-D array with a positive sum.
    """
    from PIL import Image

    def too_big(shape):   # checked on the header, before the pixels are read or decoded
        return len(shape) == 2 and max(shape) > MAX_SIZE
    try:
        if path.lower().endswith('.npy'):
            with open(path, 'rb') as f:   # the .npy format only: no .npz archive, no pickle
                version = np.lib.format.read_magic(f)
                header = {(1, 0): np.lib.format.read_array_header_1_0,
                          (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if header is not None and too_big(shape := header(f)[0]):
                    raise _TooBig(shape)
                f.seek(0)
                k = np.lib.format.read_array(f, allow_pickle=False).astype(np.float64)
        else:
            with Image.open(path) as im:
                if too_big(im.size[::-1]):
                    raise _TooBig(im.size[::-1])
                k = np.asarray(im.convert('F'), dtype=np.float64)
    except Image.DecompressionBombError as e:   # Pillow refuses it on opening: far over any kernel size
        raise ValueError(f'blur kernel {path!r}: larger than {MAX_SIZE} pixels a side ({e})') from None
    except _TooBig as e:
        h, w = e.args[0]
        raise ValueError(f'blur kernel {path!r}: {w}x{h} is larger than {MAX_SIZE} pixels a side') from None
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f'blur kernel {path!r}: cannot read it ({e})') from None
    if k.ndim != 2 or not np.isfinite(k).all() or (k < 0).any() or k.sum() <= 0:
        raise ValueError(f'blur kernel {path!r}: need a finite, non-negative 2-D array with a positive sum')
    if too_big(k.shape):   # a header format not read above (.npy 3.0)
        raise ValueError(f'blur kernel {path!r}: {k.shape[1]}x{k.shape[0]} is larger than {MAX_SIZE} pixels a side')
    return torch.from_numpy(k / k.sum()).float()


class _TooBig(Exception):
    """A kernel file whose header gives a side over MAX_SIZE (args: (height, width))."""


class Blur(Degradation):
    """Depthwise 2-D convolution with a normalised kernel; edges replicated, so a convex mix stays in [-1, 1]."""
    name = 'blur'
    help = 'Gaussian blur, or a kernel from an image / .npy file (deblurring)'
    cuda_graph_safe = True
    affine = True
    params = (Param('sigma', float, 2.0, 'Gaussian standard deviation in pixels'),
              Param('size', int, 0, 'kernel side (odd); 0 = 2*ceil(3*sigma)+1', bounds=(0, MAX_SIZE)),
              Param('kernel', str, None, 'path of a kernel image or .npy file (overrides sigma and size)'))

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.kernel:
            if not os.path.isfile(self.kernel):
                raise self.fail('kernel', 'is not a file')
            k = read_kernel(self.kernel)
        else:
            if self.sigma <= 0:
                raise self.fail('sigma', 'must be > 0')
            size = self.size or 2 * math.ceil(3 * self.sigma) + 1
            if size < 1 or size % 2 == 0:
                raise self.fail('size', 'must be a positive odd number')
            if size > MAX_SIZE:
                raise self.fail('size' if self.size else 'sigma',
                                f'gives a {size}-pixel kernel; at most {MAX_SIZE}')
            k = gaussian_kernel(self.sigma, size)
        self.register_buffer('weight', k, persistent=False)

    def _pad(self):
        """(left, right, top, bottom) padding that keeps the output the size of the input."""
        kh, kw = self.weight.shape  # asymmetric for even sides: the output stays aligned with the input
        return ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)

    def forward(self, x):
        """Depthwise convolution [N,C,H,W] -> [N,C,H,W], edges replicated (a convex mix stays in [-1, 1])."""
        c = x.shape[1]
        k = self.weight.flip(0, 1).to(x.dtype).expand(c, 1, *self.weight.shape)  # true convolution
        return F.conv2d(F.pad(x, self._pad(), mode='replicate'), k, groups=c)

    def transform_mask(self, m):
        """A pixel stays known only if every pixel under the kernel is known (erosion)."""
        hole = F.pad(1 - m, self._pad(), mode='replicate')
        return 1 - F.max_pool2d(hole, tuple(self.weight.shape), stride=1)

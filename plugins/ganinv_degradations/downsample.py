"""Super-resolution: downsample by an integer factor (area, or antialiased bicubic)."""
import torch.nn.functional as F

from ganinv_core.hooks import Degradation, Param


class Downsample(Degradation):
    """Area (box mean of f x f blocks) or antialiased bicubic downsampling by an integer factor."""
    name = 'downsample'
    help = 'downsample by an integer factor 2-32 (super-resolution); the target may be the small image'
    cuda_graph_safe = True
    params = (Param('factor', int, 4, 'downsampling factor', bounds=(2, 32)),
              Param('method', str, 'area', 'area (box mean) or bicubic (antialiased)', ('area', 'bicubic')))

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.affine = self.method == 'area'   # bicubic overshoots and is clamped back into [-1, 1]

    def output_size(self, size):
        """size / factor; the factor must divide the side."""
        if size % self.factor:
            raise self.fail('factor', f'does not divide the image size {size}')
        return size // self.factor

    def forward(self, x):
        """[N,C,H,W] -> [N,C,H/f,W/f]."""
        s = self.output_size(x.shape[-1]), self.output_size(x.shape[-2])
        if self.method == 'area':
            return F.avg_pool2d(x, self.factor)
        return F.interpolate(x, size=s[::-1], mode='bicubic', antialias=True, align_corners=False).clamp(-1, 1)

"""A camera's colour response: per-channel gain, then a gamma curve."""
from ganinv_core.hooks import Degradation, Param


class ColourResponse(Degradation):
    """Per-channel gains, then a gamma curve, on [0, 1] intensities; applied to both sides (not simulation only)."""
    name = 'colour-response'
    help = "a camera's colour response: per-channel gain, then gamma (u -> (g_c u)^gamma on [0, 1])"
    params = (Param('gamma', float, 1.8, 'exponent of the response curve (> 0)'),
              Param('red', float, 1.0, 'gain of the red channel (> 0)'),
              Param('green', float, 1.0, 'gain of the green channel (> 0)'),
              Param('blue', float, 0.8, 'gain of the blue channel (> 0)'))

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for key in ('gamma', 'red', 'green', 'blue'):
            if getattr(self, key) <= 0:
                raise self.fail(key, 'must be > 0')

    def forward(self, x):
        """[N,3,H,W] in [-1, 1] -> same shape and range; differentiable (u is kept away from 0)."""
        u = (x + 1) / 2 * x.new_tensor([self.red, self.green, self.blue]).view(1, 3, 1, 1)
        return u.clamp(1e-6, 1).pow(self.gamma) * 2 - 1

"""Denoising: additive Gaussian noise on the (simulated) target; identity on the generated image."""
import torch

from ganinv_core.hooks import Degradation, Param


class Noise(Degradation):
    """Seeded additive Gaussian noise; ``simulate_only``, so the generated image is compared as it is."""
    name = 'noise'
    help = 'additive Gaussian noise, applied to a clean input in simulation only (denoising)'
    simulate_only = True
    params = (Param('sigma', float, 25.0, 'standard deviation in 0-255 pixel units', bounds=(0, None)),
              Param('seed', int, 0, 'random seed of the noise (same seed, same noise)', bounds=(0, 2 ** 32 - 1)))

    def forward(self, x):
        """x + sigma * 2/255 * n, n ~ N(0, 1) drawn from ``seed`` (one map per image), clipped to [-1, 1]."""
        g = torch.Generator().manual_seed(self.seed)
        n = torch.randn(x.shape, generator=g, dtype=torch.float32).to(x.device, x.dtype)
        return (x + n * (self.sigma * 2 / 255)).clamp(-1, 1)

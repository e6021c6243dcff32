"""Denoising: additive Gaussian noise on the (simulated) target; identity on the generated image."""
import numpy as np
import torch

from ganinv_core.hooks import Degradation, Param


class Noise(Degradation):
    """Seeded additive Gaussian noise; ``simulate_only``, so the generated image is compared as it is."""
    name = 'noise'
    help = 'additive Gaussian noise, applied to a clean input in simulation only (denoising)'
    simulate_only = True
    params = (Param('sigma', float, 25.0, 'standard deviation in 0-255 pixel units', bounds=(0, None)),
              Param('seed', int, 0, "random seed of the noise (ganinv-run mixes in each target's name: every "
                                    'photo and video frame gets its own noise, the same in every run)',
                    bounds=(0, 2 ** 32 - 1)))

    def forward(self, x):
        """x + sigma * 2/255 * n, n ~ N(0, 1) drawn from ``seed`` (one map per image), clipped to [-1, 1]."""
        return self.simulate(x)

    def simulate(self, x, key=None):
        """``forward`` with the noise drawn from (``seed``, ``key``) when a key is given."""
        seed = self.seed if key is None else int(np.random.SeedSequence([self.seed, key]).generate_state(1)[0])
        n = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
        return (x + n.to(x.device, x.dtype) * (self.sigma * 2 / 255)).clamp(-1, 1)

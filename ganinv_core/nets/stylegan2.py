"""The StyleGAN2 generator (NVIDIA's stylegan2-ada-pytorch names, shapes and numbers)."""
import copy
import json

import torch

from .mapping import MappingNetwork
from .synthesis import SynthesisNetwork


class Generator(torch.nn.Module):
    """z [N, z_dim] (+ c) -> image [N, img_channels, R, R]; `synthesis` is built before `mapping`.

    Args:
        z_dim, c_dim, w_dim, img_resolution, img_channels: sizes.
        mapping_kwargs: MappingNetwork arguments (num_layers, lr_multiplier, ...).
        synthesis_kwargs: SynthesisNetwork / SynthesisBlock arguments (channel_base, channel_max,
            num_fp16_res, conv_clamp, architecture, resample_filter, ...).

    Attributes:
        init_kwargs: the constructor arguments (ADA nesting), JSON-serialisable.
    """

    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs=None,
                 synthesis_kwargs=None):
        super().__init__()
        mapping_kwargs, synthesis_kwargs = dict(mapping_kwargs or {}), dict(synthesis_kwargs or {})
        self.init_kwargs = json.loads(json.dumps(dict(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
            mapping_kwargs=copy.deepcopy(mapping_kwargs), synthesis_kwargs=copy.deepcopy(synthesis_kwargs))))
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, **mapping_kwargs)

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, **synthesis_kwargs):
        """z [N, z_dim], c [N, c_dim] or None -> [N, img_channels, R, R] (synthesis_kwargs: noise_mode, ...)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)

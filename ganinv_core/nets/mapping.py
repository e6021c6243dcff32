"""StyleGAN2 mapping network z (+ c) -> w, with the running mean `w_avg` and truncation."""
import torch

from .layers import FullyConnectedLayer, normalize_2nd_moment


class MappingNetwork(torch.nn.Module):
    """z [N, z_dim] (+ c [N, c_dim]) -> ws [N, num_ws, w_dim] through `num_layers` lrelu FC layers.

    Args:
        z_dim, c_dim, w_dim: latent, label and intermediate latent sizes.
        num_ws: rows to broadcast w to, or None to return [N, w_dim].
        num_layers: FC layers (8 in config-f).
        embed_features: label embedding size (default w_dim); layer_features: hidden size (default w_dim).
        activation: hidden activation; lr_multiplier: equalised-LR multiplier (0.01).
        w_avg_beta: decay of the running mean of w (training only), or None for no `w_avg`.
    """

    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, embed_features=None, layer_features=None,
                 activation='lrelu', lr_multiplier=0.01, w_avg_beta=0.995):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers, self.w_avg_beta = num_layers, w_avg_beta
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for i in range(num_layers):
            setattr(self, f'fc{i}', FullyConnectedLayer(features[i], features[i + 1], activation=activation,
                                                        lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer('w_avg', torch.zeros([w_dim]))

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False):
        """Map latents to ws.

        Args:
            z: [N, z_dim] (any float dtype; computed in float32).
            c: [N, c_dim] labels, or None when c_dim == 0.
            truncation_psi: w <- lerp(w_avg, w, psi); 1 = off.
            truncation_cutoff: truncate only the first rows of ws, or None for all.
            skip_w_avg_update: do not update `w_avg` in training mode.

        Returns:
            [N, num_ws, w_dim] (or [N, w_dim] when num_ws is None).

        Raises:
            ValueError: z or c of the wrong shape, or truncation without `w_avg`.
        """
        x = None
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise ValueError(f'mapping: z must be [N, {self.z_dim}], got '
                                 f'{None if z is None else tuple(z.shape)}')
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                raise ValueError(f'mapping: c must be [N, {self.c_dim}] for this conditional network')
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for i in range(self.num_layers):
            x = getattr(self, f'fc{i}')(x)
        if self.training and self.w_avg_beta is not None and self.num_ws is not None and not skip_w_avg_update:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if not hasattr(self, 'w_avg'):
                raise ValueError(f'mapping: truncation_psi={truncation_psi} needs w_avg, which this network '
                                 'lacks (built with num_ws=None or w_avg_beta=None)')
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x

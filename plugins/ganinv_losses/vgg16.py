"""LPIPS-style VGG16 perceptual distance, with NVIDIA's projector semantics."""
import os

import torch

from ganinv_core.hooks import Loss, Param
from ganinv_core.metrics import to_vgg_input
from ganinv_core.nets.vgg16 import load_vgg16

_NETS = {}  # (source, device) -> frozen VGG16Features, shared by every instance


def _net(source, device):
    key = (source, str(device))
    if key not in _NETS:
        _NETS[key] = load_vgg16(source, device)
    return _NETS[key]


class VGG16(Loss):
    name = 'vgg16'
    help = "LPIPS(VGG16) distance as in NVIDIA's projector (images to [0,255], area-resized to 256)"
    cuda_graph_safe = True
    params = (Param('weights', str, None, "NVIDIA's vgg16.pt (default: downloaded), a path, "
                                          "'torchvision.pth+lpips_heads.pth', or 'random'"),
              Param('holes', str, 'black', "with holes: 'black' in both images (NVIDIA's projector), or 'fill': the "
                                           "photo's holes filled with the generated image (ILO's fill mode)",
                    ('black', 'fill')))
    test_params = {'weights': 'random'}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        src = self.weights or 'nvidia'
        if not (src == 'nvidia' or src.startswith(('random', 'http://', 'https://'))):
            missing = next((p for p in src.split('+') if not os.path.isfile(p)), None)
            if missing is not None:   # found now, before any work, not when the first batch loads the network
                raise self.fail('weights', 'no such file' if missing == src else f'{missing!r}: no such file')

    def prepare(self, target, mask):
        """Target features [N, F], computed once (the VGG weights are frozen)."""
        self.vgg = _net(self.weights, target.device)
        self.target_features = self.vgg(to_vgg_input(self._rgb(target).detach())).detach()

    @staticmethod
    def _rgb(x):
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    def forward(self, ctx):
        """[N] (f_t - f_s)^2 summed per image. Holes need no mask: both sides are black there."""
        if getattr(self, 'target_features', None) is None:
            self.prepare(ctx.target, ctx.mask)
        if self.holes == 'fill' and ctx.mask is not None:
            return self._filled(ctx)
        return self.vgg.distance(to_vgg_input(self._rgb(ctx.pred)), self.target_features)

    def _filled(self, ctx):
        """[N] LPIPS(x, m y + (1 - m) x) for the generated image x, photo y and mask m: the photo with its holes
        filled by the generated image, against the generated image whole, so that the holes' black edges are in
        neither. The filled-in pixels are held constant (no gradient through them: no backward through a second VGG
        pass); the cost is one VGG forward of the filled photo per step."""
        x, m = ctx.image, ctx.mask
        if x is None or x.shape != ctx.pred.shape:
            raise ValueError(f"holes=fill: needs the holes at the generated image's size and no other degradation "
                             f"(inpaint or --mask alone); the generated images are "
                             f"{None if x is None else tuple(x.shape)}, the degraded ones {tuple(ctx.pred.shape)}")
        with torch.no_grad():
            filled = self.vgg(to_vgg_input(m * ctx.target + (1 - m) * x.detach()))
        return self.vgg.distance(to_vgg_input(x), filled)

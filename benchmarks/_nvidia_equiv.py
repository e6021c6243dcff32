"""The NVIDIA-equivalent configuration: projector.py's step, as NVIDIA runs it, on ganinv's generator.

Every benchmark ratio is taken against this (issue 6): reference ops (`GANINV_OPS=ref`), fp32, fused modulated
convolution, batch 1, a host sync every step (the projector prints `float(loss)`), the noise regulariser as a
Python loop over every buffer and pyramid level, G's `noise_const` buffers optimised in place, and a VGG16 whose
weights require gradients (the projector never calls `requires_grad_(False)` on its TorchScript VGG). TF32 flags stay
at PyTorch's defaults, as projector.py leaves them: cuDNN convolutions in TF32 on Ampere and later, matmuls in fp32
(ours at `precision='fp32'` turns TF32 off for both, so that ratio is conservative).
"""
import copy
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from ganinv_core.nets.vgg16 import random_vgg16


class NvidiaProjectorStep:
    """State of one projector run; `step()` performs one iteration of projector.py's loop (reference doc §1.2)."""

    def __init__(self, G, target_img, device, num_steps=1000, seed=303):
        self.G = copy.deepcopy(G).eval().requires_grad_(False).to(device)
        self.device, self.num_steps, self.t = device, num_steps, 0
        torch.manual_seed(seed)
        z = np.random.RandomState(123).randn(10000 if device.type == 'cuda' else 1000, G.z_dim)
        with torch.no_grad():
            w = self.G.mapping(torch.from_numpy(z).to(device), None)[:, :1, :].cpu().numpy().astype(np.float32)
        w_avg = np.mean(w, axis=0, keepdims=True)
        self.w_std = (np.sum((w - w_avg) ** 2) / len(w)) ** 0.5
        self.noise_bufs = {n: b for n, b in self.G.synthesis.named_buffers() if 'noise_const' in n}
        self.vgg = random_vgg16().to(device).requires_grad_(True)     # projector's VGG: weight grads computed
        t = target_img.to(device).float()                                # [1,3,R,R] in [0,255]
        if t.shape[2] > 256:
            t = F.interpolate(t, size=(256, 256), mode='area')
        self.target_features = self.vgg(t).detach()
        self.w_opt = torch.tensor(w_avg, dtype=torch.float32, device=device, requires_grad=True)
        self.opt = torch.optim.Adam([self.w_opt] + list(self.noise_bufs.values()), betas=(0.9, 0.999), lr=0.1)
        for buf in self.noise_bufs.values():
            buf[:] = torch.randn_like(buf)
            buf.requires_grad = True

    def step(self):
        old, os.environ['GANINV_OPS'] = os.environ.get('GANINV_OPS'), 'ref'
        try:
            return self._step()
        finally:
            if old is None:
                del os.environ['GANINV_OPS']
            else:
                os.environ['GANINV_OPS'] = old

    def _step(self):
        t = self.t / self.num_steps
        self.t += 1
        w_noise_scale = self.w_std * 0.05 * max(0.0, 1.0 - t / 0.75) ** 2
        lr_ramp = min(1.0, (1.0 - t) / 0.25)
        lr_ramp = 0.5 - 0.5 * math.cos(lr_ramp * math.pi)
        lr_ramp = lr_ramp * min(1.0, t / 0.05)
        for g in self.opt.param_groups:
            g['lr'] = 0.1 * lr_ramp
        ws = (self.w_opt + torch.randn_like(self.w_opt) * w_noise_scale).repeat([1, self.G.num_ws, 1])
        synth = self.G.synthesis(ws, noise_mode='const', fused_modconv=True)
        synth = (synth + 1) * (255 / 2)
        if synth.shape[2] > 256:
            synth = F.interpolate(synth, size=(256, 256), mode='area')
        dist = (self.target_features - self.vgg(synth)).square().sum()
        reg = 0.0
        for v in self.noise_bufs.values():
            noise = v[None, None, :, :]
            while True:
                reg = reg + (noise * torch.roll(noise, shifts=1, dims=3)).mean() ** 2
                reg = reg + (noise * torch.roll(noise, shifts=1, dims=2)).mean() ** 2
                if noise.shape[2] <= 8:
                    break
                noise = F.avg_pool2d(noise, kernel_size=2)
        loss = dist + reg * 1e5
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        value = float(loss.detach())                                     # the projector's per-step print: a sync
        with torch.no_grad():
            for buf in self.noise_bufs.values():
                buf -= buf.mean()
                buf *= buf.square().mean().rsqrt()
        return value

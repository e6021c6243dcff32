"""FLOP counts from the architecture (1 MAC = 2 FLOP), for the achieved-TFLOP/s column of the benchmarks.

Only the convolutions and matmuls are counted; elementwise ops, FIR filters and reductions are memory-bound
and add < 2 % (reference doc §5.1).
"""
import math

VGG16_CONVS = [(3, 64), (64, 64), 'M', (64, 128), (128, 128), 'M', (128, 256), (256, 256), (256, 256), 'M',
               (256, 512), (512, 512), (512, 512), 'M', (512, 512), (512, 512), (512, 512)]


def synthesis_macs(res, channel_base=32768, channel_max=512, img_channels=3, w_dim=512):
    """MACs of one synthesis forward pass for one image, counting convs as executed.

    conv0 (up=2) runs as a stride-2 transposed conv on the R/2 input: Cin*Cout*9*(R/2)^2 MACs, i.e. the
    zero-insertion is never materialised. conv1 is a plain 3x3 at R. ToRGB is 1x1. Affines are w_dim x C.
    """
    ch = lambda r: min(channel_base // r, channel_max)
    macs = 0
    for k in range(2, int(math.log2(res)) + 1):
        r = 2 ** k
        cout = ch(r)
        if r > 4:
            cin = ch(r // 2)
            macs += cin * cout * 9 * (r // 2) ** 2 + w_dim * cin
        macs += cout * cout * 9 * r * r + w_dim * cout        # conv1 (+ its affine)
        macs += cout * img_channels * r * r + w_dim * cout     # torgb (+ its affine)
    return macs


def vgg16_macs(res=256):
    """MACs of the VGG16 conv trunk up to conv5_3 at res x res."""
    macs, r = 0, res
    for layer in VGG16_CONVS:
        if layer == 'M':
            r //= 2
        else:
            macs += layer[0] * layer[1] * 9 * r * r
    return macs


def step_flops(res, *, fused_modconv=True, vgg_weight_grads=False, channel_base=32768, channel_max=512):
    """FLOPs of one projection step for one image: G forward + backward, VGG forward + backward.

    Backward through a conv costs one forward for dX; with fused modulated convs the conv weight depends on w,
    so dW costs another forward's worth (reference doc §5.1). VGG sees min(res, 256).
    """
    g = synthesis_macs(res, channel_base, channel_max)
    v = vgg16_macs(min(res, 256))
    macs = g * (3 if fused_modconv else 2) + v * (3 if vgg_weight_grads else 2)
    return 2 * macs

"""The ArcFace IResNet: insightface arcface_torch's state-dict layout, safe loading, the FFHQ crop, embeddings."""
import numpy as np
import pytest
import torch

from ganinv_core import metrics
from ganinv_core.io._ffhq import ffhq_quad
from ganinv_core.nets import arcface as A

# ArcFace's 5-point template in its 112x112 crop (insightface): eyes, nose tip, mouth corners.
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                     [70.7299, 92.2041]])

# Names and shapes of an arcface_torch iresnet50 backbone.pth, written out from insightface's iresnet.py (stem conv
# 3x3 -> 64, four stages of 3/4/14/3 blocks whose first block is strided with a 1x1 conv + BN shortcut, BN, fc from
# 512x7x7, BatchNorm1d "features").
R50 = {'conv1.weight': (64, 3, 3, 3), 'bn1.running_var': (64,), 'prelu.weight': (64,),
       'layer1.0.bn1.weight': (64,), 'layer1.0.conv1.weight': (64, 64, 3, 3), 'layer1.0.prelu.weight': (64,),
       'layer1.0.conv2.weight': (64, 64, 3, 3), 'layer1.0.bn3.bias': (64,),
       'layer1.0.downsample.0.weight': (64, 64, 1, 1), 'layer1.0.downsample.1.running_mean': (64,),
       'layer2.0.conv1.weight': (128, 64, 3, 3), 'layer2.0.downsample.0.weight': (128, 64, 1, 1),
       'layer2.3.conv2.weight': (128, 128, 3, 3), 'layer3.0.bn1.weight': (128,),
       'layer3.13.conv2.weight': (256, 256, 3, 3), 'layer4.0.downsample.1.weight': (512,),
       'layer4.2.bn3.running_var': (512,), 'bn2.weight': (512,), 'fc.weight': (512, 25088), 'fc.bias': (512,),
       'features.weight': (512,), 'features.running_mean': (512,)}


def test_state_dict_is_arcface_torch_r50():
    sd = A.IResNet(A.DEPTHS[50]).state_dict()
    assert {k: tuple(sd[k].shape) for k in R50} == R50
    assert not any(k.startswith(('layer1.1.downsample', 'layer3.14.', 'layer4.3.')) for k in sd)
    # stem conv + BN (5 entries) + PReLU; per block 3 BN + 2 convs + PReLU; 4 shortcuts conv + BN; BN, fc, BN1d
    assert len(sd) == 1 + 5 + 1 + sum(A.DEPTHS[50]) * 18 + 4 * 6 + 5 + 2 + 5
    params = sum(p.numel() for p in A.IResNet(A.DEPTHS[50]).parameters())
    assert 43.5e6 < params < 43.7e6   # insightface's r50: 43.6 M parameters


@pytest.mark.parametrize('depth', [18, 34, 100])
def test_depth_is_read_from_the_file_and_weights_load_exactly(tmp_path, depth):
    """A DDP-saved checkpoint ('module.' names, wrapped in 'state_dict') of any depth loads to the same net."""
    net = A.random_arcface(3, A.DEPTHS[depth]).eval()
    with torch.no_grad():   # BatchNorm statistics that are not the defaults must load too
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 2), m.bias.uniform_(-0.1, 0.1)
    sd = {f'module.{k}': v for k, v in net.state_dict().items() if not k.endswith('num_batches_tracked')}
    torch.save({'state_dict': sd}, tmp_path / 'backbone.pth')
    loaded = A.load_arcface(str(tmp_path / 'backbone.pth'))
    assert loaded.blocks == A.DEPTHS[depth] and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    torch.testing.assert_close(loaded(x), net(x))


def test_bad_files_are_refused_in_one_line(tmp_path):
    sd = A.random_arcface(0).state_dict()
    (tmp_path / 'text.pth').write_text('not a checkpoint\n')
    torch.save([1, 2], tmp_path / 'list.pth')
    torch.save({**sd, 'epoch': 3}, tmp_path / 'epoch.pth')
    torch.save({k: v for k, v in sd.items() if k != 'layer2.1.conv1.weight'}, tmp_path / 'missing.pth')
    torch.save({**sd, 'head.weight': torch.ones(3)}, tmp_path / 'extra.pth')
    torch.save({**sd, 'fc.weight': torch.ones(512, 512 * 8 * 8)}, tmp_path / 'big.pth')
    torch.save({k: v for k, v in sd.items() if not k.startswith('fc.')}, tmp_path / 'nofc.pth')
    cases = {'text.pth': 'not a state dict of plain tensors (',
             'list.pth': 'expected a state dict, got list',
             'epoch.pth': "expected a state dict of tensors, 'epoch' is a int",
             'missing.pth': "stage blocks (2, 2, 2, 2): missing 'layer2.1.conv1.weight' (and 0 more)",
             'extra.pth': "unexpected 'head.weight' (and 0 more)",
             'big.pth': "'fc.weight' is (512, 32768), expected (512, 25088) (not a 112x112 IResNet?)",
             'nofc.pth': 'not an arcface_torch IResNet (no fc.weight'}
    for name, reason in cases.items():
        with pytest.raises(A.ArcFaceError) as e:
            A.load_arcface(str(tmp_path / name))
        msg = str(e.value)
        assert msg.startswith(f"ArcFace weights '{tmp_path / name}': ") and reason in msg and '\n' not in msg, msg
    with pytest.raises(A.ArcFaceError, match='no such file'):
        A.load_arcface(str(tmp_path / 'none.pth'))
    with pytest.raises(A.ArcFaceError, match="ArcFace source 'random:x': expected random or random:<integer seed>"):
        A.load_arcface('random:x')


class _Trap:
    def __reduce__(self):
        import os
        return os.mkdir, ('/tmp/ganinv-arcface-trap',)


def test_a_file_that_would_run_code_is_refused_unrun(tmp_path):
    import os
    import shutil
    shutil.rmtree('/tmp/ganinv-arcface-trap', ignore_errors=True)
    torch.save({'fc.weight': _Trap()}, tmp_path / 'trap.pth')
    with pytest.raises(A.ArcFaceError, match='not a state dict of plain tensors .*nothing in it was run'):
        A.load_arcface(str(tmp_path / 'trap.pth'))
    assert not os.path.exists('/tmp/ganinv-arcface-trap')


def test_arcface_crop_puts_the_template_where_ffhq_alignment_puts_the_face():
    """A face whose eyes and mouth corners sit on ArcFace's template, FFHQ-aligned (io/_ffhq), then cut with
    ARCFACE_BOX, has them back on the template: within 0.25 of a 112-crop pixel (the template's tilt)."""
    lm = np.tile(TEMPLATE[2], (68, 1))
    lm[36:42], lm[42:48], lm[48], lm[54] = TEMPLATE[0], TEMPLATE[1], TEMPLATE[3], TEMPLATE[4]
    lm = lm * 3.7 + [120, 80]          # the face somewhere in a photo, at another scale
    quad, _ = ffhq_quad(lm)
    right, down = quad[3] - quad[0], quad[1] - quad[0]
    x0, y0, side = A.ARCFACE_BOX
    for p, t in zip(TEMPLATE * 3.7 + [120, 80], TEMPLATE):
        u = np.array([(p - quad[0]) @ right / (right @ right), (p - quad[0]) @ down / (down @ down)])
        assert np.abs((u - [x0, y0]) / side * A.SIZE - t).max() < 0.25


def test_embed_is_unit_per_image_size_and_colour_consistent():
    net = A.load_arcface('random:1')
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(3, 3, 32, 32, generator=g), size=256, mode='bilinear') * 2 - 1
    e = net.embed(x)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    e2 = net.embed(torch.nn.functional.interpolate(x, size=512, mode='bilinear'))   # the same face, larger
    assert ((e * e2).sum(1) > 0.99).all()
    torch.testing.assert_close(net.embed(x[1:2]), e[1:2], atol=1e-5, rtol=0)       # images are independent
    grey = x.mean(1, keepdim=True)
    torch.testing.assert_close(net.embed(grey), net.embed(grey.expand(-1, 3, -1, -1)))
    with pytest.raises(A.ArcFaceError, match=r'expected square faces \[N,1\|3,S,S\], got \(3, 3, 256, 128\)'):
        net.embed(x[..., :128])


def test_identity_metric_is_the_embedding_cosine():
    net = A.load_arcface('random:2')
    a, b = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    s = metrics.identity(a, b, net)
    torch.testing.assert_close(s, (net.embed(a) * net.embed(b)).sum(1))
    torch.testing.assert_close(metrics.identity(a, a, net), torch.ones(2))
    torch.testing.assert_close(metrics.identity(b, a, net), s)

"""VGG16Features: the LPIPS formula, and the three weight sources (random, torchvision + heads, NVIDIA TorchScript)."""
import os

import pytest
import torch
import torch.nn.functional as F

from ganinv_core.nets import vgg16 as V

from ganinv_losses.vgg16 import _net

NET = _net('random', 'cpu')  # the random network shared with the loss tests (built once)
pytestmark = pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated:DeprecationWarning')


def _lpips_reference(net, a, b):
    """LPIPS as its authors write it: normalise, squared diff, 1x1 lin, spatial mean, sum over levels."""
    d = 0
    for fa, fb, w in zip(net.levels(a), net.levels(b), net.lins):
        na = fa / (fa.square().sum(1, keepdim=True).sqrt() + 1e-10)
        nb = fb / (fb.square().sum(1, keepdim=True).sqrt() + 1e-10)
        d = d + F.conv2d((na - nb) ** 2, w.view(1, -1, 1, 1)).mean((1, 2, 3))
    return d


def test_random_source_is_seeded():
    a, b = V.random_vgg16(3), V.random_vgg16(3)
    assert torch.equal(a.convs[5].weight, b.convs[5].weight) and (a.lin2 > 0).all()


def test_features_give_lpips_distance():
    a, b = torch.rand(2, 3, 32, 32) * 255, torch.rand(2, 3, 32, 32) * 255
    d = (NET(a) - NET(b)).square().sum(1)
    torch.testing.assert_close(d, _lpips_reference(NET, a, b), rtol=1e-4, atol=1e-6)
    assert NET(a).shape == (2, 64 * 32 * 32 + 128 * 16 * 16 + 256 * 64 + 512 * 16 + 512 * 4)
    assert not any(p.requires_grad for p in NET.parameters()) and not NET.training


@pytest.mark.parametrize('impl', ['ref', 'ext'])
def test_distance_is_the_feature_distance(impl, monkeypatch):
    """`distance` (one lpips_distance op per level) = (f_t - f(x))^2 summed, = LPIPS; values and image gradients,
    for a target per image and one target broadcast over the batch; bf16 features under autocast too."""
    monkeypatch.setenv('GANINV_OPS', impl)
    t, x = torch.rand(2, 3, 32, 32) * 255, (torch.rand(2, 3, 32, 32) * 255).requires_grad_()
    for tf in (NET(t), NET(t[:1])):
        d = NET.distance(x, tf)
        want = (tf - NET(x)).square().sum(1)
        torch.testing.assert_close(d, want, rtol=1e-5, atol=1e-7)
        w = torch.tensor([0.7, -1.3])
        g, = torch.autograd.grad((d * w).sum(), x)
        g_want, = torch.autograd.grad((want * w).sum(), x)
        torch.testing.assert_close(g, g_want, rtol=1e-4, atol=1e-4 * g_want.abs().max().item())
    torch.testing.assert_close(NET.distance(t, NET(x.detach())), _lpips_reference(NET, t, x.detach()), rtol=1e-4,
                               atol=1e-6)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        d16 = NET.distance(x, NET(t))
        want16 = (NET(t).float() - NET(x).float()).square().sum(1)
    torch.testing.assert_close(d16, want16, rtol=1e-4, atol=1e-6)


def test_distance_refuses_features_of_another_size():
    x = torch.rand(2, 3, 32, 32) * 255
    with pytest.raises(V.VGG16Error, match=r'target features must be \[2 or 1, 124928\] .* got \(2, 31232\)'):
        NET.distance(x, NET(torch.rand(2, 3, 16, 16)))
    with pytest.raises(V.VGG16Error, match=r'got \(3, 124928\)'):
        NET.distance(x, NET(torch.rand(3, 3, 32, 32)))


def test_scaling_layer_matches_lpips_on_minus1_1():
    x = torch.rand(1, 3, 16, 16) * 255
    conv0 = NET.convs[0]
    lp = ((x / 127.5 - 1) - torch.tensor(V.SHIFT).view(1, 3, 1, 1)) / torch.tensor(V.SCALE).view(1, 3, 1, 1)
    torch.testing.assert_close(NET.levels(x)[0], F.relu(NET.convs[1](F.relu(conv0(lp)))))


def _tensors():
    convs = [(c.weight.detach().clone(), c.bias.detach().clone()) for c in NET.convs]
    return convs, [w.clone() for w in NET.lins]


def test_torchvision_state_dict_plus_heads(tmp_path):
    convs, lins = _tensors()
    idx = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]               # torchvision's features.N
    sd = {f'features.{i}.{k}': t for i, (w, b) in zip(idx, convs) for k, t in (('weight', w), ('bias', b))}
    sd['classifier.0.weight'] = torch.zeros(4, 4)
    torch.save(sd, tmp_path / 'vgg16-tv.pth')
    torch.save({f'lin{k}.model.1.weight': w.view(1, -1, 1, 1) for k, w in enumerate(lins)}, tmp_path / 'vgg.pth')
    net = V.load_vgg16(f'{tmp_path / "vgg16-tv.pth"}+{tmp_path / "vgg.pth"}')
    x = torch.rand(1, 3, 32, 32) * 255
    torch.testing.assert_close(net(x), NET(x))
    if V._lpips_package_heads() is None:
        with pytest.raises(V.VGG16Error, match='no LPIPS linear heads'):
            V.load_vgg16(str(tmp_path / 'vgg16-tv.pth'))


def test_torchvision_files_that_are_not_vgg16_are_refused(tmp_path):
    """Each refusal is one line naming the file and what is wrong (a torch error's first line quoted whole)."""
    convs, lins = _tensors()
    idx = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    sd = {f'features.{i}.{k}': t for i, (w, b) in zip(idx, convs) for k, t in (('weight', w), ('bias', b))}
    heads = {f'lin{k}.model.1.weight': w.view(1, -1, 1, 1) for k, w in enumerate(lins)}
    (tmp_path / 'text.pth').write_text('not a checkpoint\n')
    torch.save([1, 2], tmp_path / 'list.pth')
    (tmp_path / 'cut.pth').write_bytes((tmp_path / 'list.pth').read_bytes()[:300])
    torch.save({k: v for k, v in sd.items() if not k.startswith('features.28.')}, tmp_path / 'twelve.pth')
    torch.save({**sd, **{k: v for k, v in heads.items() if not k.startswith('lin4.')}}, tmp_path / 'fourheads.pth')
    torch.save({**sd, **heads, 'lin2.model.1.weight': torch.ones(1, 255, 1, 1)}, tmp_path / 'badhead.pth')
    torch.save({**sd, **heads, 'features.5.weight': torch.ones(128, 64, 5, 5)}, tmp_path / 'badconv.pth')
    cases = {'text.pth': 'not a state dict of plain tensors (Unsupported operand 110; nothing in it was run)',
             'cut.pth': 'cannot read it as a torch state dict (RuntimeError: ',
             'list.pth': 'expected a state dict, got list',
             'twelve.pth': 'expected torchvision VGG16 keys features.N.weight for 13 convolutions, found 12',
             'fourheads.pth': 'expected LPIPS keys lin0..lin4',
             'badhead.pth': 'LPIPS head of 255 values does not match 256 channels',
             'badconv.pth': 'convolution shape (128, 64, 5, 5) does not match VGG16 (128, 64, 3, 3)'}
    for name, reason in cases.items():
        with pytest.raises(V.VGG16Error) as e:
            V.load_vgg16(str(tmp_path / name))
        msg = str(e.value)
        assert msg.startswith(f'{tmp_path / name}: ') and reason in msg and '\n' not in msg, msg
        assert msg.endswith(')') or name not in ('text.pth', 'cut.pth'), msg   # a quoted error closed, not cut
    with pytest.raises(V.VGG16Error, match="VGG16 source 'random:x': expected random or random:<integer seed>"):
        V.load_vgg16('random:x')


class _NvidiaLike(torch.nn.Module):
    """A module with NVIDIA's vgg16.pt call signature; names unlike ours, heads stored before the trunk."""

    def __init__(self, convs, lins):
        super().__init__()
        self.lin_weights = torch.nn.ParameterList([torch.nn.Parameter(w.view(1, -1, 1, 1)) for w in lins])
        self.layers = torch.nn.ModuleList()
        for w, b in convs:
            c = torch.nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1)
            c.weight.data.copy_(w), c.bias.data.copy_(b)
            self.layers.append(c)

    def forward(self, img, resize_images: bool = False, return_lpips: bool = False):
        x = (img / 127.5 - 1 - torch.tensor([-.030, -.088, -.188]).view(1, 3, 1, 1)) / \
            torch.tensor([.458, .448, .450]).view(1, 3, 1, 1)
        outs = []
        i = 0
        for layer in self.layers:
            if i in (2, 4, 7, 10):
                x = F.max_pool2d(x, 2)
            x = F.relu(layer(x))
            if i in (1, 3, 6, 9, 12):
                outs.append(x)
            i += 1
        feats = []
        j = 0
        for w in self.lin_weights:
            f = outs[j]
            f = f / (f.square().sum(1, keepdim=True).sqrt() + 1e-10)
            feats.append((f * (w / (f.shape[2] * f.shape[3])).sqrt()).flatten(1))
            j += 1
        return torch.cat(feats, 1)


def test_nvidia_torchscript_by_order_and_shape(tmp_path):
    ref = _NvidiaLike(*_tensors())
    scripted = torch.jit.script(ref)
    scripted.save(str(tmp_path / 'vgg16.pt'))
    net = V.load_vgg16(str(tmp_path / 'vgg16.pt'))
    x = torch.rand(2, 3, 32, 32) * 255
    torch.testing.assert_close(net(x), scripted(x, resize_images=False, return_lpips=True), rtol=1e-5, atol=1e-6)
    assert not any(p.requires_grad for p in net.parameters())


def test_torchscript_reader_refuses_code(tmp_path):
    import pickle
    import zipfile
    with zipfile.ZipFile(tmp_path / 'evil.pt', 'w') as z:
        z.writestr('evil/data.pkl', pickle.dumps(os.system, protocol=2))
        z.writestr('evil/constants.pkl', b'')
    with pytest.raises(V.VGG16Error, match='not allowed'):
        V.load_vgg16(str(tmp_path / 'evil.pt'))


def test_not_a_vgg_names_what_is_missing(tmp_path):
    torch.jit.script(torch.nn.Conv2d(3, 8, 3)).save(str(tmp_path / 'small.pt'))
    with pytest.raises(V.VGG16Error, match=r'no 64x3x3x3 convolution'):
        V.load_vgg16(str(tmp_path / 'small.pt'))
    with pytest.raises(V.VGG16Error, match='no such file'):
        V.load_vgg16(str(tmp_path / 'missing.pt'))


def test_download_cached_like_the_generators_and_offline_error(tmp_path, monkeypatch):
    from ganinv_core.weights import _hub
    monkeypatch.setenv('GANINV_CACHE', str(tmp_path / 'cache'))
    src = tmp_path / 'remote' / 'vgg16.pt'
    src.parent.mkdir()
    ref = _NvidiaLike(*_tensors())
    torch.jit.script(ref).save(str(src))
    monkeypatch.setattr(V, 'NVIDIA_URL', src.as_uri())                 # the default source, served locally
    net = V.load_vgg16()                                                 # downloaded, then read
    path = _hub.cached_path(src.as_uri())
    name = os.path.basename(path)
    assert sorted(os.listdir(tmp_path / 'cache')) == [name, name + '.sha256']
    src.unlink()
    x = torch.rand(1, 3, 32, 32) * 255
    torch.testing.assert_close(V.load_vgg16('nvidia')(x), net(x))       # cached: no network
    torch.testing.assert_close(net(x), ref(x))
    with pytest.raises(V.VGG16Error, match=r'^cannot download VGG16 weights from .*other\.pt .*; offline\? fetch '
                                           r'other\.pt elsewhere and pass its path \(--loss vgg16:weights=') as e:
        V.download((tmp_path / 'nothere' / 'other.pt').as_uri())
    assert '\n' not in str(e.value) and '--network' not in str(e.value)
    assert len(os.listdir(tmp_path / 'cache')) == 2                      # no partial file left


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_channels_last_gives_the_same_levels_and_gradients(dtype):
    """NHWC memory is a layout choice only: the five feature levels (and in float64 the input gradient) match.
    (Compared on the levels: the unit-norm step divides by near-zero norms where a pixel's ReLUs are all ~0.)"""
    vgg = V.random_vgg16(seed=2).to(dtype)
    seen = []
    vgg.convs[3].register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous(memory_format=torch.channels_last)))
    x = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(5), dtype=dtype) * 255
    out = {}
    for cl in (False, True):
        vgg.channels_last = cl
        xi = x.clone().requires_grad_(True)
        levels = vgg.levels(xi)
        sum((f * torch.linspace(-1, 1, f.shape[1], dtype=dtype).view(1, -1, 1, 1)).sum() for f in levels).backward()
        out[cl] = [f.detach() for f in levels], xi.grad
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    for a, b in zip(out[True][0], out[False][0]):
        torch.testing.assert_close(a, b, **tol)
    if dtype == torch.float64:   # float32 rounding can move a max-pool's argmax between near-equal inputs
        torch.testing.assert_close(out[True][1], out[False][1], **tol)
    assert seen == [False, True]        # the NHWC run really ran NHWC (the input of a 64-channel convolution)

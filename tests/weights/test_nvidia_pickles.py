"""NVIDIA-format pickles written here by emulating `torch_utils.persistence` (reference doc §4.1)."""
import collections
import contextlib
import json
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from ganinv_core.nets import Generator
from ganinv_core.weights import UnsupportedNetworkError, WeightsError, convert, load_generator

FIX = os.path.join(os.path.dirname(__file__), '..', 'fixtures', 'nvidia-tiny')
CFG = json.load(open(os.path.join(FIX, 'ada32_config.json')))['init_kwargs']
REF = {k: torch.from_numpy(v) for k, v in np.load(os.path.join(FIX, 'ada32_reference.npz')).items()}


@contextlib.contextmanager
def nvidia_modules():
    """Fake `torch_utils.persistence` and `dnnlib.util` so pickle writes NVIDIA's global names."""
    persistence = types.ModuleType('torch_utils.persistence')
    util = types.ModuleType('dnnlib.util')

    def _reconstruct_persistent_obj(meta):
        raise AssertionError('never called while writing')

    class EasyDict(dict):
        pass
    _reconstruct_persistent_obj.__module__ = persistence.__name__
    _reconstruct_persistent_obj.__qualname__ = '_reconstruct_persistent_obj'
    EasyDict.__module__, EasyDict.__qualname__ = util.__name__, 'EasyDict'
    persistence._reconstruct_persistent_obj, util.EasyDict = _reconstruct_persistent_obj, EasyDict
    mods = {'torch_utils': types.ModuleType('torch_utils'), 'torch_utils.persistence': persistence,
            'dnnlib': types.ModuleType('dnnlib'), 'dnnlib.util': util}
    mods['torch_utils'].persistence, mods['dnnlib'].util = persistence, util
    saved = {k: sys.modules.get(k) for k in mods}
    sys.modules.update(mods)
    try:
        yield persistence, util
    finally:
        for k, v in saved.items():
            sys.modules.pop(k) if v is None else sys.modules.__setitem__(k, v)


class Persistent:
    """Reduces like NVIDIA's persistent Decorator: `_reconstruct_persistent_obj(meta)`."""

    def __init__(self, fn, meta):
        self.fn, self.meta = fn, meta

    def __reduce__(self):
        return self.fn, (self.meta,), None


def _stub(m, fn, EasyDict, src, init_kwargs, class_name=None):
    state = {'training': False, '_parameters': collections.OrderedDict(m._parameters),
             '_buffers': collections.OrderedDict(m._buffers), '_non_persistent_buffers_set': set(),
             '_backward_hooks': collections.OrderedDict(), '_forward_hooks': collections.OrderedDict(),
             '_forward_pre_hooks': collections.OrderedDict(), '_state_dict_hooks': collections.OrderedDict(),
             '_load_state_dict_pre_hooks': collections.OrderedDict(),
             '_modules': collections.OrderedDict((k, _stub(c, fn, EasyDict, src, EasyDict(w_dim=64)))
                                                 for k, c in m._modules.items()),
             '_init_args': (), '_init_kwargs': init_kwargs}
    for k in ('weight_gain', 'act_gain', 'conv_clamp', 'architecture', 'use_fp16', 'padding', 'resolution'):
        if k in m.__dict__:  # NVIDIA's modules carry such attributes, floats as numpy.float64
            v = m.__dict__[k]
            state[k] = np.float64(v) if isinstance(v, float) else v
    meta = dict(type='class', version=6, module_src=src, class_name=class_name or type(m).__name__, state=state)
    return Persistent(fn, meta)


def nvidia_generator():
    G = Generator(**CFG).eval().requires_grad_(False)
    state = np.load(os.path.join(FIX, 'ada32_state.npz'))
    G.load_state_dict({k: torch.from_numpy(state[k]) for k in state.files})
    return G


def write_pickle(path, layout='ada', src='# training/networks.py\n', protocol=3, edit=None):
    """An NVIDIA network pickle of the fixture generator; `edit(top_dict, g_kwargs)` may change it."""
    G = nvidia_generator()
    with nvidia_modules() as (persistence, util):
        E = util.EasyDict
        kw = E(z_dim=64, c_dim=0, w_dim=64, img_resolution=32, img_channels=3, mapping_kwargs=E(num_layers=2))
        syn = E(channel_base=1024, channel_max=64, num_fp16_res=0, conv_clamp=None)
        if layout == 'ada':
            kw['synthesis_kwargs'] = syn
        else:  # stylegan3 repository: training.networks_stylegan2, synthesis kwargs flat
            kw.update(syn, fused_modconv_default='inference_only')
        top = {'G': None, 'D': None, 'augment_pipe': None, 'training_set_kwargs': E(resolution=32)}
        if edit:
            edit(top, kw, G)
        top['G_ema'] = top.get('G_ema') or _stub(G, persistence._reconstruct_persistent_obj, E, src, kw)
        with open(path, 'wb') as f:
            pickle.dump(top, f, protocol=protocol)
    return path


def check_reference(G):
    with torch.no_grad():
        for fused in (True, False):
            img = G.synthesis(REF['ws'], noise_mode='const', fused_modconv=fused)
            assert (img - REF['img_const']).abs().max() <= 1e-4
        assert (G.mapping(REF['z'], None, truncation_psi=0.7) - REF['ws_trunc07']).abs().max() <= 1e-4


@pytest.mark.parametrize('layout, protocol', [('ada', 3), ('sg3', 4)])
def test_nvidia_pickles_load_to_nvidia_numbers(tmp_path, layout, protocol):
    G = load_generator(write_pickle(tmp_path / 'net.pkl', layout, protocol=protocol))
    assert not G.training and not any(p.requires_grad for p in G.parameters())
    check_reference(G)
    assert G.init_kwargs['synthesis_kwargs']['channel_base'] == 1024
    if layout == 'sg3':
        assert G.init_kwargs['synthesis_kwargs']['fused_modconv_default'] == 'inference_only'


def test_module_src_is_never_executed(tmp_path):
    marker = tmp_path / 'pwned'
    src = f'\ufeffopen({str(marker)!r}, "w").write("pwned")\n'
    check_reference(load_generator(write_pickle(tmp_path / 'net.pkl', src=src)))
    assert not marker.exists()


def _evil_pickle(path, module, name, args):
    """PROTO 3, {'G_ema': module.name(*args)}: a hand-assembled reduce of an arbitrary global."""
    body = pickle.dumps(args, protocol=3)[2:-1]
    data = (b'\x80\x03}X\x05\x00\x00\x00G_ema' + f'c{module}\n{name}\n'.encode() + body + b'Rs.')
    path.write_bytes(data)
    return path


@pytest.mark.parametrize('module, name, args', [
    ('os', 'system', 'touch {m}'), ('posix', 'system', 'touch {m}'),
    ('builtins', 'eval', 'open({m!r}, "w")'), ('subprocess', 'Popen', ['touch', '{m}']),
])
def test_malicious_pickles_are_refused_and_nothing_runs(tmp_path, module, name, args):
    marker = str(tmp_path / 'pwned')
    arg = [a.format(m=marker) for a in args] if isinstance(args, list) else args.format(m=marker)
    path = _evil_pickle(tmp_path / 'evil.pkl', module, name, (arg,))
    with pytest.raises(WeightsError, match=f"'{module}.{name}'") as e:
        load_generator(path)
    assert '\n' not in str(e.value) and str(path) in str(e.value)
    assert not os.path.exists(marker)
    if (module, name) == ('os', 'system'):  # the payload is real: the stock unpickler runs it
        pickle.loads(path.read_bytes())
        assert os.path.exists(marker)


@pytest.mark.parametrize('module, name, args, reason', [
    # allow-listed names, each misused: every one has its own guard
    ('numpy._core.multiarray', 'scalar', (np.dtype(object), bytes(8)), "scalar of dtype dtype('O') is not allowed"),
    ('numpy.core.multiarray', '_reconstruct', (set, (0,), b'b'), 'of a class other than numpy.ndarray'),
    ('_codecs', 'encode', ('text', 'rot13'), "_codecs.encode with encoding 'rot13' is not allowed"),
    ('torch_utils.persistence', '_reconstruct_persistent_obj', ('meta',), 'malformed persistent object'),
    ('torch_utils.persistence', '_reconstruct_persistent_obj', ({'state': None},), 'malformed persistent object'),
])
def test_allow_listed_globals_refuse_misuse(tmp_path, module, name, args, reason):
    path = _evil_pickle(tmp_path / 'odd.pkl', module, name, args)
    with pytest.raises(WeightsError, match='not a readable network pickle') as e:
        load_generator(path)
    assert reason in str(e.value) and str(path) in str(e.value) and '\n' not in str(e.value)


def test_persistent_ids_and_truncation_are_refused(tmp_path):
    """A `torch.save`-style persistent id (BINPERSID), and a stream cut inside the top-level dict."""
    (tmp_path / 'pid.pkl').write_bytes(b'\x80\x03}X\x05\x00\x00\x00G_emaX\x01\x00\x00\x000Qs.')
    (tmp_path / 'cut.pkl').write_bytes(b'\x80\x03}X\x05\x00\x00\x00G_ema')
    for name, reason in (('pid.pkl', 'persistent ids are not used'), ('cut.pkl', 'truncated pickle')):
        with pytest.raises(WeightsError, match=reason) as e:
            load_generator(tmp_path / name)
        assert str(tmp_path / name) in str(e.value) and '\n' not in str(e.value)


class _System:
    """Reduces to os.system(cmd): the classic pickle payload."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


def test_payload_inside_a_valid_network_is_refused(tmp_path):
    marker = tmp_path / 'pwned'

    def evil(top, kw, G):
        kw['mapping_kwargs']['payload'] = _System(f'touch {marker}')
    path = write_pickle(tmp_path / 'net.pkl', edit=evil)
    with pytest.raises(WeightsError, match=r"refused.*'(posix|os|nt)\.system'"):
        load_generator(path)
    assert not marker.exists()


def test_pickle_to_safetensors_round_trip(tmp_path):
    pkl = write_pickle(tmp_path / 'net.pkl')
    out = convert(pkl, tmp_path / 'net.safetensors')
    a, b = load_generator(pkl), load_generator(out)
    assert a.init_kwargs == b.init_kwargs
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    for fused in (True, False):
        assert torch.equal(a.synthesis(REF['ws'], fused_modconv=fused), b.synthesis(REF['ws'], fused_modconv=fused))
    with pytest.raises(WeightsError, match='already exists'):
        convert(pkl, out)
    convert(pkl, out, overwrite=True)


def test_broken_files_give_one_line_errors(tmp_path):
    pkl = write_pickle(tmp_path / 'net.pkl')
    data = pkl.read_bytes()
    (tmp_path / 'cut.pkl').write_bytes(data[:len(data) // 2])
    (tmp_path / 'img.pkl').write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(100))
    (tmp_path / 'empty.pkl').write_bytes(b'')
    torch.save({'a': torch.zeros(2)}, tmp_path / 'ckpt.pt')
    (tmp_path / 'list.pkl').write_bytes(pickle.dumps([1, 2], protocol=3))
    (tmp_path / 'noG.pkl').write_bytes(pickle.dumps({'G': None, 'D': None}, protocol=4))
    cases = {'missing.pkl': 'no such file', 'cut.pkl': 'truncated', 'img.pkl': 'neither', 'empty.pkl': 'empty',
             'ckpt.pt': 'zip archive', 'list.pkl': 'top level is a list', 'noG.pkl': 'no G_ema'}
    for name, reason in cases.items():
        with pytest.raises(WeightsError, match=reason) as e:
            load_generator(tmp_path / name)
        assert '\n' not in str(e.value) and name in str(e.value)


def test_unsupported_networks(tmp_path):
    def conditional(top, kw, G):
        kw['c_dim'] = 10

    with pytest.raises(UnsupportedNetworkError, match='conditional.*not supported'):
        load_generator(write_pickle(tmp_path / 'c.pkl', edit=conditional))

    def sg3(top, kw, G):  # an alias-free generator has a SynthesisInput module
        from ganinv_core.nets import FullyConnectedLayer
        G.synthesis.input = FullyConnectedLayer(4, 4)
        top['G_ema'] = _stub(G, sys.modules['torch_utils.persistence']._reconstruct_persistent_obj,
                             sys.modules['dnnlib.util'].EasyDict, 'src', kw)
        top['G_ema'].meta['state']['_modules']['synthesis'].meta['state']['_modules']['input'].meta['class_name'] = \
            'SynthesisInput'
    with pytest.raises(UnsupportedNetworkError, match='StyleGAN3.*not supported'):
        load_generator(write_pickle(tmp_path / 's.pkl', edit=sg3))

    def discriminator(top, kw, G):
        top['G_ema'] = _stub(G, sys.modules['torch_utils.persistence']._reconstruct_persistent_obj,
                             sys.modules['dnnlib.util'].EasyDict, 'src', kw, class_name='Discriminator')
    with pytest.raises(WeightsError, match='d.pkl: G_ema is not a StyleGAN2 generator'):
        load_generator(write_pickle(tmp_path / 'd.pkl', edit=discriminator))


def _edit_g_ema(change):
    """A `write_pickle` edit: G_ema's stub built here, then `change(meta_state, kw)` applied to it."""
    def edit(top, kw, G):
        top['G_ema'] = _stub(G, sys.modules['torch_utils.persistence']._reconstruct_persistent_obj,
                             sys.modules['dnnlib.util'].EasyDict, 'src', kw)
        change(top['G_ema'].meta, kw)
    return edit


def _module_state(meta, *path):
    for name in path:
        meta = meta['state']['_modules'][name].meta
    return meta['state']


@pytest.mark.parametrize('change, reason', [
    (lambda m, kw: m.update(version=5), 'unknown persistence format version 5 (expected 6)'),
    (lambda m, kw: _module_state(m, 'mapping')['_parameters'].update(extra=[0.5]),
     'G_ema: mapping.extra is a list, not a tensor'),
    (lambda m, kw: _module_state(m, 'synthesis', 'b8')['_modules'].update(conv0={'weight': 1}),
     'G_ema: synthesis.b8.conv0 is a dict, not a network module'),
    (lambda m, kw: _module_state(m, 'mapping').update(_buffers='w_avg'),
     'G_ema: mapping._buffers is a str, not a dict'),
    (lambda m, kw: m['state'].update(_modules=5), 'G_ema: _modules is an int, not a dict'),
    (lambda m, kw: kw.update(mapping_kwargs='x'), 'G_ema._init_kwargs.mapping_kwargs is a str, not a dict'),
    (lambda m, kw: kw.pop('w_dim'), 'G_ema._init_kwargs lacks w_dim'),
    (lambda m, kw: m['state'].update(_init_kwargs='z_dim=64'), 'G_ema has malformed _init_args / _init_kwargs'),
    (lambda m, kw: m['state'].update(_init_args=tuple(range(9))), 'G_ema has malformed _init_args / _init_kwargs'),
])
def test_malformed_generator_pickles_are_refused(tmp_path, change, reason):
    path = write_pickle(tmp_path / 'odd.pkl', edit=_edit_g_ema(change))
    with pytest.raises(WeightsError) as e:
        load_generator(path)
    assert str(e.value) == f'{path}: {reason}'


def test_tensorflow_pickles_are_not_supported(tmp_path, monkeypatch):
    mod = types.ModuleType('dnnlib.tflib.network')

    class Network:  # pickles as dnnlib.tflib.network.Network, like NVIDIA's TensorFlow-era (G, D, Gs) tuples
        pass
    Network.__module__, Network.__qualname__, mod.Network = mod.__name__, 'Network', Network
    for name in ('dnnlib', 'dnnlib.tflib'):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    net = Network()
    net.__dict__.update(name='G', variables=[('w', np.zeros(2, np.float32))])
    (tmp_path / 'tf.pkl').write_bytes(pickle.dumps((net, net, net), protocol=3))
    with pytest.raises(UnsupportedNetworkError, match='tf.pkl: TensorFlow.*not supported'):
        load_generator(tmp_path / 'tf.pkl')

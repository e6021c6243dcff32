"""Built-in random networks, the download cache and the safetensors format's checks."""
import hashlib
import io
import os
import urllib.error

import pytest
import torch

from ganinv_core import weights
from ganinv_core.weights import WeightsError, load_generator, save_generator
from ganinv_core.weights import _hub


def test_random_networks_are_seeded_and_independent_of_global_rng():
    torch.manual_seed(1)
    a = load_generator('random-32')
    torch.manual_seed(2)
    b = load_generator('random-32')
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert a.img_resolution == 32 and a.num_ws == 8 and not a.training
    assert a.mapping.w_avg.abs().sum() > 0
    c = load_generator('random-64')
    assert c.synthesis(c.mapping(torch.randn(1, c.z_dim), None)).shape == (1, 3, 64, 64)
    assert set(weights.RANDOM_NETWORKS) == {'random-32', 'random-64', 'random-256', 'random-1024'}


def test_an_unusable_device_is_named():
    """load_generator's device is checked where it is given: torch's reason, in one line naming the argument."""
    with pytest.raises(ValueError, match=r"^device 'nosuch': not usable here \(RuntimeError: Expected one of cpu"):
        load_generator('random-32', device='nosuch')
    if torch.version.cuda is None:   # a CPU-only torch: was its bare AssertionError
        with pytest.raises(ValueError, match=r"^device 'cuda': not usable here \(AssertionError: Torch not compiled"):
            load_generator('random-32', device='cuda')


def test_save_generator_refuses_overwrite_and_checks_metadata(tmp_path):
    G = load_generator('random-32')
    save_generator(G, tmp_path / 'g.safetensors')
    with pytest.raises(WeightsError, match='already exists'):
        save_generator(G, tmp_path / 'g.safetensors')
    from safetensors.torch import save_file
    save_file({'x': torch.zeros(2)}, str(tmp_path / 'other.safetensors'))
    with pytest.raises(WeightsError, match='without ganinv generator metadata'):
        load_generator(tmp_path / 'other.safetensors')
    data = (tmp_path / 'g.safetensors').read_bytes()
    (tmp_path / 'cut.safetensors').write_bytes(data[:len(data) - 100])
    with pytest.raises(WeightsError, match='cut.safetensors'):
        load_generator(tmp_path / 'cut.safetensors')
    with pytest.raises(WeightsError, match='not a known network name'):
        load_generator('ffhqq')


def test_safetensors_that_do_not_match_their_config_are_refused(tmp_path):
    """A file whose tensors or config were edited: each mismatch is one line naming the file, the tensor and the
    reason, never a half-loaded generator."""
    import json
    from safetensors.torch import save_file
    from ganinv_core.weights._safetensors import FORMAT
    G = load_generator('random-32')
    state = {k: v.contiguous() for k, v in G.state_dict().items()}
    key = 'synthesis.b8.conv0.weight'
    o, i, k, _ = state[key].shape

    def write(name, tensors, kwargs=G.init_kwargs):
        save_file(tensors, str(tmp_path / name), metadata={'format': FORMAT, 'init_kwargs': json.dumps(kwargs)})
        return tmp_path / name
    bad_cfg = dict(G.init_kwargs, synthesis_kwargs=dict(G.init_kwargs['synthesis_kwargs'], channel_mult=2))  # no such
    cases = [
        (write('missing.safetensors', {k: v for k, v in state.items() if k != key}), f"missing: ['{key}']"),
        (write('extra.safetensors', {**state, 'synthesis.b8.extra': torch.zeros(1)}),
         "unexpected: ['synthesis.b8.extra']"),
        (write('shape.safetensors', {**state, key: state[key][:, :-1].contiguous()}),
         f'{key} has shape {(o, i - 1, k, k)}, expected {(o, i, k, k)}'),
        (write('config.safetensors', state, bad_cfg), 'unsupported generator configuration (TypeError: '),
    ]
    (tmp_path / 'folder.safetensors').mkdir()
    cases.append((tmp_path / 'folder.safetensors', 'is a directory, not a network file'))
    for path, reason in cases:
        with pytest.raises(WeightsError) as e:
            load_generator(path)
        assert str(e.value).startswith(f'{path}: ') and reason in str(e.value) and '\n' not in str(e.value), e.value
    G2 = load_generator(write('good.safetensors', state))   # the unedited copy loads: the edits are what is refused
    assert all(torch.equal(v, G2.state_dict()[k]) for k, v in state.items())


@pytest.mark.parametrize('edit, message', [
    (dict(z_dim=0), 'z_dim=0 must be an integer in [1, 2048]'),                      # was a ZeroDivisionError
    (dict(w_dim=10 ** 9), 'w_dim=1000000000 must be an integer in [1, 2048]'),       # was an allocation of that size
    (dict(img_resolution=48), 'img_resolution=48 must be a power of 2 in [4, 4096]'),
    (dict(img_channels=True), 'img_channels=True must be an integer in [1, 4]'),
    (dict(mapping_kwargs='x'), "mapping_kwargs must be a dict, got str"),
    (dict(mapping_kwargs=dict(num_layers=8, activation='gelu')), "mapping_kwargs.activation='gelu' must be one of "),
    (dict(synthesis_kwargs=dict(channel_base=-1)), 'synthesis_kwargs.channel_base=-1 must be an integer in '),
    (dict(synthesis_kwargs=dict(conv_clamp='x')), "synthesis_kwargs.conv_clamp='x' must be null or a number > 0"),
    (dict(synthesis_kwargs=dict(num_fp16_res=1.5)), 'synthesis_kwargs.num_fp16_res=1.5 must be an integer in [0, 13]'),
    (dict(synthesis_kwargs=dict(resample_filter=[1, 'x'])), "synthesis_kwargs.resample_filter=[1, 'x'] must be a "),
    (dict(synthesis_kwargs=dict(architecture='unet')), "synthesis_kwargs.architecture='unet' must be one of 'orig', "),
])
def test_a_config_out_of_range_is_refused_before_anything_is_built(tmp_path, monkeypatch, edit, message):
    """A network file's configuration, checked key by key: one line naming the key, its value and the range."""
    import json
    from safetensors.torch import save_file
    from ganinv_core.nets import stylegan2
    from ganinv_core.weights._safetensors import FORMAT
    G = load_generator('random-32')
    monkeypatch.setattr(stylegan2.Generator, '__init__', lambda *a, **k: pytest.fail('built from a bad config'))
    path = tmp_path / 'g.safetensors'
    save_file({k: v.contiguous() for k, v in G.state_dict().items()}, str(path),
              metadata={'format': FORMAT, 'init_kwargs': json.dumps({**G.init_kwargs, **edit})})
    with pytest.raises(WeightsError) as e:
        load_generator(path)
    assert str(e.value).startswith(f'{path}: generator configuration: {message}'), str(e.value)


def test_a_conditional_network_file_is_refused_whatever_its_format(tmp_path):
    """As for NVIDIA pickles: a .safetensors file whose config has c_dim > 0 is refused by name, not loaded."""
    import json
    from safetensors.torch import save_file
    from ganinv_core.weights import UnsupportedNetworkError
    from ganinv_core.weights._safetensors import FORMAT
    G = load_generator('random-32')
    path = tmp_path / 'c.safetensors'
    save_file({k: v.contiguous() for k, v in G.state_dict().items()}, str(path),
              metadata={'format': FORMAT, 'init_kwargs': json.dumps({**G.init_kwargs, 'c_dim': 10})})
    with pytest.raises(UnsupportedNetworkError, match=rf'^{path}: conditional networks \(c_dim=10\) are not supported'):
        load_generator(path)


class FakeResponse(io.BytesIO):
    def __init__(self, data, length=None):
        super().__init__(data)
        self.headers = {'Content-Length': str(len(data) if length is None else length)}

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def test_download_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('GANINV_CACHE', str(tmp_path / 'cache'))
    G = load_generator('random-32')
    save_generator(G, tmp_path / 'src.safetensors')
    data = (tmp_path / 'src.safetensors').read_bytes()
    calls = []
    monkeypatch.setattr(_hub.urllib.request, 'urlopen', lambda url, timeout: calls.append(url) or FakeResponse(data))
    monkeypatch.setitem(_hub.NETWORKS, 'tiny', 'https://example.org/nets/tiny.safetensors')
    a = load_generator('tiny')
    bar = capsys.readouterr().err  # tqdm's progress bar, on stderr
    assert 'tiny.safetensors' in bar and '100%' in bar
    path = tmp_path / 'cache' / 'tiny.safetensors'
    assert path.read_bytes() == data and len(calls) == 1
    assert open(str(path) + '.sha256').read().split()[0] == hashlib.sha256(data).hexdigest()
    b = load_generator('tiny')  # reused, not downloaded again
    assert len(calls) == 1 and all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    path.write_bytes(data[:-1] + b'x')
    with pytest.raises(WeightsError, match='does not match its recorded sha256'):
        load_generator('tiny')
    os.remove(path)
    monkeypatch.setattr(_hub.urllib.request, 'urlopen', lambda url, timeout: FakeResponse(data[:50], len(data)))
    with pytest.raises(WeightsError, match='incomplete'):
        load_generator('tiny')
    assert not path.exists() and [p for p in os.listdir(tmp_path / 'cache') if p.startswith('.download')] == []

    def offline(url, timeout):
        raise urllib.error.URLError('Name or service not known')
    monkeypatch.setattr(_hub.urllib.request, 'urlopen', offline)
    with pytest.raises(WeightsError, match=r'pass a local file instead: --network /path/to/tiny.safetensors') as e:
        load_generator('tiny')
    assert '\n' not in str(e.value) and 'Name or service not known' in str(e.value)


def test_short_names_point_to_nvidia():
    assert weights.NETWORKS['ffhq'].endswith('/stylegan2-ada-pytorch/pretrained/ffhq.pkl')
    assert all(u.startswith('https://') and u.endswith('.pkl') for u in weights.NETWORKS.values())

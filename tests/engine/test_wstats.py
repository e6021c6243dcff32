import numpy as np
import pytest
import torch

from ganinv_core.engine import _wstats


def test_w_stats_are_the_projectors(G):
    w_avg, w_std = _wstats.compute_w_stats(G, samples=500)
    z = torch.from_numpy(np.random.RandomState(123).randn(500, G.z_dim)).float()
    with torch.no_grad():
        w = G.mapping(z, None)[:, 0].numpy()
    np.testing.assert_allclose(w_avg, w.mean(0), rtol=1e-5, atol=1e-6)
    assert w_std == pytest.approx(float(np.sqrt(((w - w.mean(0)) ** 2).sum() / 500)), rel=1e-5)


def test_w_stats_cached_per_network(G, monkeypatch, tmp_path):
    monkeypatch.setenv('GANINV_CACHE', str(tmp_path))
    first = _wstats.w_stats(G)
    files = list((tmp_path / 'wstats').glob('*.npz'))
    assert len(files) == 1 and files[0].stem == _wstats.network_hash(G)
    monkeypatch.setattr(_wstats, 'compute_w_stats', lambda *a, **k: pytest.fail('cache not used'))
    again = _wstats.w_stats(G)
    np.testing.assert_array_equal(first[0], again[0])
    assert first[1] == again[1]


def test_a_corrupt_or_unwritable_cache_costs_only_recomputation(G, monkeypatch, tmp_path):
    """A damaged cache entry is recomputed and replaced; a cache that cannot be written is skipped, not an error."""
    monkeypatch.setenv('GANINV_CACHE', str(tmp_path / 'c'))
    want = _wstats.compute_w_stats(G)
    entry = tmp_path / 'c' / 'wstats' / f'{_wstats.network_hash(G)}.npz'
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b'PK\x03\x04 not a zip')
    got = _wstats.w_stats(G)
    np.testing.assert_array_equal(got[0], want[0])
    with np.load(entry) as f:                                       # rewritten whole
        np.testing.assert_array_equal(f['w_avg'], want[0])
    (tmp_path / 'file').write_text('')
    monkeypatch.setenv('GANINV_CACHE', str(tmp_path / 'file'))      # its 'wstats' folder cannot be made
    got = _wstats.w_stats(G)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1] == want[1]


def test_network_hash_follows_weights(G):
    import copy
    H = copy.deepcopy(G)
    assert _wstats.network_hash(H) == _wstats.network_hash(G)
    with torch.no_grad():
        next(iter(H.mapping.parameters())).add_(1e-3)
    assert _wstats.network_hash(H) != _wstats.network_hash(G)

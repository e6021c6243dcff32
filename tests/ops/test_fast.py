"""`ops._fast`: the per-call reads of the environment and of a tensor's device type give what the standard reads
give, on the raw path and on the public-mapping fallback."""
import os

import pytest
import torch

from ganinv_core.ops import _fast

from _devices import CUDA



@pytest.mark.parametrize('raw', [True, False], ids=['raw', 'fallback'])
def test_getenv_agrees_with_os_environ(raw, monkeypatch):
    if raw and not _fast._RAW:
        pytest.skip('this platform has no raw environment dict')
    monkeypatch.setattr(_fast, '_RAW', raw)
    name = 'GANINV_TEST_FAST_GETENV'
    monkeypatch.delenv(name, raising=False)
    assert _fast.getenv(name) == '' and _fast.getenv(name, 'dflt') == 'dflt'
    for value in ('ext', '', ' Auto ', 'café ✓'):
        monkeypatch.setenv(name, value)
        assert _fast.getenv(name, 'dflt') == os.environ.get(name, 'dflt') == value
    os.environ[name] = 'set directly'   # plain assignment, not monkeypatch
    assert _fast.getenv(name) == 'set directly'
    del os.environ[name]
    assert _fast.getenv(name, 'gone') == 'gone'


def test_getenv_follows_a_replaced_environ(monkeypatch):
    """A test double put in place of os.environ itself (not just an assignment into it) is read."""
    monkeypatch.setattr(os, 'environ', {'GANINV_OPS': 'ref'})
    assert _fast.getenv('GANINV_OPS') == 'ref' and _fast.getenv('GANINV_SELFTEST', '1') == '1'


@pytest.mark.parametrize('device', ['cpu', 'meta', CUDA])
def test_device_type_agrees_with_device(device):
    for x in (torch.zeros(2, 3, device=device), torch.zeros(2, 3, device=device, dtype=torch.float16)[:, 1:]):
        assert _fast.device_type(x) == x.device.type == device

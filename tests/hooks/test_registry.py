"""Plugin loading: broken plugins (warn and skip vs strict), duplicates, env vars, listing, the example plugin."""
import importlib.metadata as md
import os
import shutil
import subprocess
import sys
import types

import pytest

import ganinv_core.hooks._registry as registry_mod
from ganinv_core.hooks import (Degradation, LandmarkDetector, Loss, PluginError, PluginWarning, Registry,
                               get_registry, hookimpl)

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, '..', '..', 'examples', 'ganinv-plugin-example')


def _degradation(name):
    return type(name.title(), (Degradation,), {'name': name, 'help': 'h', 'forward': lambda self, x: x})


def _plugin_module(modname, **hooks):
    mod = types.ModuleType(modname)
    for hook, fn in hooks.items():
        setattr(mod, hook, hookimpl(fn))
    return mod


class _Dist:
    """A stand-in for an installed distribution with ``ganinv`` entry points."""

    def __init__(self, name, eps, version='1.0'):
        self.metadata, self.version = {'Name': name}, version
        self.entry_points = [md.EntryPoint(n, v, 'ganinv') for n, v in eps.items()]


@pytest.fixture
def installed(monkeypatch):
    """Replace the installed distributions with fakes: installed(dist, ...) -> None."""
    def install(*dists):
        monkeypatch.setattr(registry_mod.md, 'distributions', lambda: list(dists))
    for var in ('GANINV_DISABLE_EXTERNAL_PLUGINS', 'GANINV_LOAD_PLUGINS'):
        monkeypatch.delenv(var, raising=False)
    return install


@pytest.fixture
def fake_modules(monkeypatch):
    good = _plugin_module('fake_good', ganinv_degradations=lambda: [_degradation('good-deg')])
    raising = _plugin_module('fake_raising', ganinv_losses=lambda: 1 / 0)
    wrong = _plugin_module('fake_wrong', ganinv_losses=lambda: [_degradation('not-a-loss')])
    for m in (good, raising, wrong):
        monkeypatch.setitem(sys.modules, m.__name__, m)


def test_direct_registration_without_entry_points():
    reg = Registry([_plugin_module('p1', ganinv_degradations=lambda: [_degradation('d1')])], entry_points=False)
    assert list(reg.degradations) == ['d1'] and list(reg.plugins) == ['p1']


@pytest.mark.parametrize('ep, error', [('fake_missing_module_xyz', 'ModuleNotFoundError'),
                                       ('fake_raising', 'ZeroDivisionError'),
                                       ('fake_wrong', 'not a subclass of Loss')])
def test_broken_plugin_warns_and_is_skipped(installed, fake_modules, monkeypatch, ep, error):
    monkeypatch.delenv('GANINV_PLUGINS_STRICT', raising=False)
    installed(_Dist('good-dist', {'good': 'fake_good'}), _Dist('bad-dist', {'bad': ep}))
    with pytest.warns(PluginWarning, match=f"plugin 'bad' \\(bad-dist\\) is broken and was skipped: .*{error}"):
        reg = Registry()
    assert 'good-deg' in reg.degradations and 'not-a-loss' not in reg.losses
    assert list(reg.broken) == ['bad'] and error in reg.broken['bad']
    assert 'bad (bad-dist 1.0)  BROKEN' in reg.format_plugin_list()
    assert not reg.pm.is_registered(sys.modules.get(ep))


@pytest.mark.parametrize('ep', ['fake_missing_module_xyz', 'fake_raising'])
def test_broken_plugin_is_fatal_in_strict_mode(installed, fake_modules, monkeypatch, ep):
    monkeypatch.setenv('GANINV_PLUGINS_STRICT', '1')
    installed(_Dist('bad-dist', {'bad': ep}))
    with pytest.raises(PluginError, match="plugin 'bad' \\(bad-dist\\) is broken"):
        Registry()


def test_duplicate_names_name_both_plugins(installed, monkeypatch):
    for m in ('dup_a', 'dup_b'):
        monkeypatch.setitem(sys.modules, m, _plugin_module(m, ganinv_degradations=lambda: [_degradation('same')]))
    installed(_Dist('dist-a', {'a': 'dup_a'}), _Dist('dist-b', {'b': 'dup_b'}))
    with pytest.raises(PluginError, match=r"degradation 'same' is registered twice: by plugin 'a' \(dist-a\) and "
                                          r"by plugin 'b' \(dist-b\)"):
        Registry()


def test_duplicate_plugin_names_name_both_distributions(installed, fake_modules):
    installed(_Dist('dist-a', {'p': 'fake_good'}), _Dist('dist-b', {'p': 'fake_good'}))
    with pytest.raises(PluginError, match="plugin name 'p' is provided twice: by dist-a and by dist-b"):
        Registry()


def test_env_disable_external_and_load_only(installed, fake_modules, monkeypatch):
    installed(_Dist('ganinv', {'own': 'fake_good'}), _Dist('other', {'bad': 'fake_raising'}))
    monkeypatch.setenv('GANINV_DISABLE_EXTERNAL_PLUGINS', '1')
    assert list(Registry().plugins) == ['own']
    monkeypatch.delenv('GANINV_DISABLE_EXTERNAL_PLUGINS')
    monkeypatch.setenv('GANINV_LOAD_PLUGINS', 'own')
    assert list(Registry().plugins) == ['own']
    monkeypatch.setenv('GANINV_LOAD_PLUGINS', 'own,nothere')
    with pytest.raises(PluginError, match='GANINV_LOAD_PLUGINS names nothere'):
        Registry()


def test_hook_returning_bad_name_is_broken(monkeypatch):
    monkeypatch.setenv('GANINV_PLUGINS_STRICT', '1')
    with pytest.raises(PluginError, match="name='Bad Name' is not a valid name"):
        Registry({'p': _plugin_module('p', ganinv_degradations=lambda: [_degradation('Bad Name')])}, entry_points=False)


def test_detectors_and_listing():
    class Det(LandmarkDetector):
        name, help = 'fake-det', 'finds nothing'

        def detect(self, image):
            return []

    class L(Loss):
        name, help, default_weight = 'fake-loss', 'zero', 0.25

        def forward(self, ctx):
            return ctx.pred.sum((1, 2, 3)) * 0
    reg = Registry({'p': _plugin_module('p', ganinv_landmark_detectors=lambda: [Det], ganinv_losses=lambda: [L])},
                   entry_points=False)
    assert reg.build_detector('fake-det').detect(None) == []
    assert reg.build_loss('fake-loss').weight == 0.25
    text = reg.format_plugin_list()
    assert 'p (registered directly)' in text and 'detector fake-det: finds nothing' in text
    assert 'weight=0.25  (float)' in text


def test_installed_builtins_come_through_entry_points():
    reg = get_registry()
    assert get_registry() is reg                                   # cached
    assert reg.plugins['degradations'].dist == 'ganinv' and 'blur' in reg.plugins['degradations'].provides['degradation']
    assert 'losses (ganinv ' in registry_mod.format_plugin_list()
    assert not any(Registry(entry_points=False).components.values())   # no other way in


def test_example_plugin_found_through_entry_points(tmp_path, monkeypatch):
    """pip-install the template into a temporary folder; discovery must find it there."""
    target, src = tmp_path / 'site', tmp_path / 'src'
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns('build', '*.egg-info', '__pycache__'))
    r = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-build-isolation', '--no-index',
                        '--quiet', '--disable-pip-version-check', '--target', str(target), str(src)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    monkeypatch.syspath_prepend(str(target))
    monkeypatch.delenv('GANINV_LOAD_PLUGINS', raising=False)
    monkeypatch.delitem(sys.modules, 'ganinv_example', raising=False)
    reg = Registry()
    info = reg.plugins['example']
    assert (info.dist, info.version, info.error) == ('ganinv-plugin-example', '0.1.0', None)
    assert 'colour-response' in reg.degradations and 'colour-stats' in reg.losses
    assert reg.degradations['colour-response'].__module__.startswith('ganinv_example')
    assert 'example (ganinv-plugin-example 0.1.0)' in reg.format_plugin_list()
    from ganinv_core.hooks.testing import check_degradation, check_loss
    check_degradation(reg.degradations['colour-response'])
    check_loss(reg.losses['colour-stats'])
    monkeypatch.setenv('GANINV_DISABLE_EXTERNAL_PLUGINS', '1')
    assert 'example' not in Registry().plugins


def test_every_hook_is_documented():
    from ganinv_core.hooks import GanInvSpecs
    doc = open(os.path.join(HERE, '..', '..', 'docs', 'plugins.md'), encoding='utf-8').read()
    hooks = [n for n in dir(GanInvSpecs) if n.startswith('ganinv_')]
    assert len(hooks) == 3 and all(f'`{h}()`' in doc for h in hooks)


def test_misspelt_hook_is_broken_not_ignored(monkeypatch):
    monkeypatch.setenv('GANINV_PLUGINS_STRICT', '1')
    typo = _plugin_module('typo', ganinv_degradation=lambda: [_degradation('never-seen')])
    with pytest.raises(PluginError, match="plugin 'typo' .*unknown hook 'ganinv_degradation'"):
        Registry({'typo': typo}, entry_points=False)


def test_load_plugins_by_distribution_and_missing_name_warns(installed, fake_modules, monkeypatch):
    installed(_Dist('good-dist', {'good': 'fake_good'}), _Dist('other', {'bad': 'fake_raising'}))
    monkeypatch.setenv('GANINV_LOAD_PLUGINS', 'good-dist')
    assert list(Registry().plugins) == ['good']
    monkeypatch.delenv('GANINV_PLUGINS_STRICT', raising=False)
    monkeypatch.setenv('GANINV_LOAD_PLUGINS', 'good,nothere')
    with pytest.warns(PluginWarning, match='GANINV_LOAD_PLUGINS names nothere'):
        assert list(Registry().plugins) == ['good']


def test_builtins_listing_shows_distribution_version_params_and_flags():
    text = get_registry().format_plugin_list()
    version = md.version('ganinv')
    for plugin in ('degradations', 'losses'):
        assert f'\n{plugin} (ganinv {version})\n' in f'\n{text}\n'
    lines = text.splitlines()
    blur = lines.index(f'  degradation blur: {get_registry().degradations["blur"].help}')
    assert lines[blur + 1] == '      sigma=2.0  (float)  Gaussian standard deviation in pixels'
    assert '      method=\'area\'  (str, area|bicubic)  area (box mean) or bicubic (antialiased)' in lines
    assert any(line.startswith('  degradation noise: ') and line.endswith('[simulation only]') for line in lines)
    assert not any(line.startswith('  degradation blur: ') and 'simulation' in line for line in lines)
    assert '      weight=0.001  (float)  multiplier of this term in the total loss' in lines   # latent-dist
    assert not any('cuda_graph_safe' in line for line in lines)   # every built-in that runs in the step is
    third = Registry([_plugin_module('p1', ganinv_degradations=lambda: [_degradation('d1')])], entry_points=False)
    assert '  degradation d1: h  [not cuda_graph_safe: a run using it steps eagerly]' in \
        third.format_plugin_list().splitlines()


def test_a_component_that_fails_to_build_is_named_with_its_plugin():
    """A third-party component whose constructor raises something other than a ValueError (a bug of its own) gives
    a one-line PluginError naming the component, its plugin and the spec; its own ValueErrors pass through."""
    class Fragile(Degradation):
        name, help = 'fragile', 'h'

        def __init__(self, **kw):
            super().__init__(**kw)
            raise KeyError('weights')

    class Checked(Degradation):
        name, help = 'checked', 'h'

        def __init__(self, **kw):
            super().__init__(**kw)
            raise self.fail('x', 'is wrong')
    reg = Registry([_plugin_module('acme_plugin', ganinv_degradations=lambda: [Fragile, Checked])], entry_points=False)
    with pytest.raises(PluginError) as e:
        reg.build_degradation('fragile')
    assert str(e.value) == ("degradation 'fragile' (plugin 'acme_plugin'): building it from 'fragile' failed "
                            "(KeyError: 'weights')") and isinstance(e.value.__cause__, KeyError)
    with pytest.raises(ValueError, match=r"^degradation 'checked': x=None is wrong$") as e:
        reg.build_degradation('checked')
    assert not isinstance(e.value, PluginError)


def test_instance_with_overrides_is_an_error():
    from ganinv_core.hooks import SpecError
    reg = Registry([_plugin_module('p1', ganinv_degradations=lambda: [_degradation('d1')])], entry_points=False)
    d = reg.build_degradation('d1')
    assert reg.build_degradation(d) is d
    with pytest.raises(SpecError, match="degradation 'd1': keyword overrides x need a spec string"):
        reg.build_degradation(d, x=1)

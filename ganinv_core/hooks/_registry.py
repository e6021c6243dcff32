"""Plugin discovery (entry-point group ``ganinv``) and the registry of named components.

Environment:
    GANINV_PLUGINS_STRICT=1            any plugin error is fatal (the test suite runs with it).
    GANINV_DISABLE_EXTERNAL_PLUGINS=1  load only the entry points of ganinv's own distribution.
    GANINV_LOAD_PLUGINS=a,b            load only the entry points (or distributions) named.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.metadata as md
import os
import warnings
from typing import Any, Iterable

import pluggy

from .._errors import exc_line
from ._base import Degradation, LandmarkDetector, Loss
from ._spec import _NAME, SpecError, parse_spec
from ._specs import HOOKS, PROJECT, GanInvSpecs

GROUP = PROJECT
OWN_DIST = 'ganinv'
_BASES = {'degradation': Degradation, 'loss': Loss, 'detector': LandmarkDetector}


class PluginError(ValueError):
    """A plugin failed to load, returned something invalid, or clashes with another plugin."""


class PluginWarning(UserWarning):
    """A broken plugin was skipped (fatal under GANINV_PLUGINS_STRICT=1)."""


@dataclasses.dataclass
class PluginInfo:
    """One plugin as listed by ``--list-plugins``."""
    name: str
    dist: str = ''
    version: str = ''
    provides: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    error: str | None = None


def _env_flag(name: str) -> bool:
    """True when the environment variable ``name`` is 1, true, yes or on (any case)."""
    return os.environ.get(name, '').strip().lower() in ('1', 'true', 'yes', 'on')


def strict_mode() -> bool:
    """True under ``GANINV_PLUGINS_STRICT=1``: plugin errors raise PluginError instead of warning."""
    return _env_flag('GANINV_PLUGINS_STRICT')


def _entry_points() -> list[tuple[md.EntryPoint, str, str]]:
    """(entry point, distribution name, version) of the ``ganinv`` group, filtered by the env vars."""
    only = {s.strip() for s in os.environ.get('GANINV_LOAD_PLUGINS', '').split(',') if s.strip()}
    no_external = _env_flag('GANINV_DISABLE_EXTERNAL_PLUGINS')
    found, seen = [], set()
    for dist in md.distributions():
        dname = dist.metadata['Name'] or ''
        for ep in dist.entry_points:
            if ep.group != GROUP or (dname, ep.name) in seen:
                continue  # a distribution visible twice on sys.path counts once
            if no_external and dname.lower() != OWN_DIST or only and not only & {ep.name, dname}:
                continue
            seen.add((dname, ep.name))
            found.append((ep, dname, dist.version))
    missing = only - {n for ep, d, _ in found for n in (ep.name, d)}
    if missing:
        _fail(f'GANINV_LOAD_PLUGINS names {", ".join(sorted(missing))}, which no installed plugin provides')
    return found


def _fail(message: str, cause: BaseException | None = None) -> None:
    """Raise PluginError (strict mode) or warn with PluginWarning."""
    if strict_mode():
        raise PluginError(message) from cause
    warnings.warn(message, PluginWarning, stacklevel=3)


class Registry:
    """Named degradations, losses and landmark detectors collected from a pluggy plugin manager.

    Args:
        plugins: extra plugin objects (modules, classes or instances with ``@hookimpl`` functions) to
            register directly, as ``name -> object`` or an iterable of objects.
        entry_points: load the installed ``ganinv`` entry points (tests pass False).
    """

    def __init__(self, plugins: dict[str, Any] | Iterable[Any] = (), entry_points: bool = True):
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(GanInvSpecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.components: dict[str, dict[str, tuple[type, str]]] = {k: {} for k in _BASES}
        if entry_points:
            for ep, dist, version in _entry_points():
                self._add(ep.name, ep.load, dist, version, what=f'entry point {ep.value!r}')
        items = plugins.items() if isinstance(plugins, dict) else (
            (getattr(p, '__name__', type(p).__name__), p) for p in plugins)
        for name, obj in items:
            self._add(name, lambda obj=obj: obj, '', '', what='object')

    def _add(self, name, load, dist, version, what):
        """Load one plugin, register it and collect its classes; a failure marks it broken (see ``_fail``)."""
        info = PluginInfo(name, dist, version)
        if name in self.plugins:
            other = self.plugins[name]
            raise PluginError(f'plugin name {name!r} is provided twice: by {other.dist or "a direct registration"} '
                              f'and by {dist or "a direct registration"}')
        self.plugins[name] = info
        obj = None
        try:
            obj = load()
            self.pm.register(obj, name=name)
            self.pm.check_pending()  # a @hookimpl whose name is no hook (a typo) would otherwise be ignored
            found = self._collect(obj, name)
        except Exception as e:  # a broken plugin must not take ganinv down
            if obj is not None and self.pm.is_registered(obj):
                self.pm.unregister(obj)
            info.error = exc_line(e)
            _fail(f'ganinv plugin {name!r} ({dist or what}) is broken and was skipped: {info.error}', e)
            return
        for kind, classes in found.items():
            table = self.components[kind]
            for cls in classes:
                if cls.name in table:
                    first = table[cls.name][1]
                    raise PluginError(f'{kind} {cls.name!r} is registered twice: by plugin {first!r} '
                                      f'({self.plugins[first].dist or "direct"}) and by plugin {name!r} '
                                      f'({dist or "direct"}); uninstall one or select with GANINV_LOAD_PLUGINS')
                table[cls.name] = (cls, name)
            info.provides[kind] = sorted(c.name for c in classes)

    def _collect(self, obj, plugin: str) -> dict[str, list[type]]:
        """Call each hook of one plugin and check what it returns."""
        found = {}
        for impl_hook, kind in HOOKS.items():
            for impl in getattr(self.pm.hook, impl_hook).get_hookimpls():
                if impl.plugin is not obj:
                    continue
                classes = list(impl.function() or ())
                seen = set()
                for cls in classes:
                    base = _BASES[kind]
                    if not (isinstance(cls, type) and issubclass(cls, base)):
                        raise PluginError(f'{impl_hook}() returned {cls!r}, not a subclass of {base.__name__}')
                    if not isinstance(cls.name, str) or not _NAME.match(cls.name):
                        raise PluginError(f'{cls.__name__}.name={cls.name!r} is not a valid name')
                    if cls.name in seen:
                        raise PluginError(f'{kind} {cls.name!r} is returned twice by {impl_hook}()')
                    seen.add(cls.name)
                found[kind] = classes
        return found

    # -- lookup and construction ------------------------------------------------------------------

    @property
    def degradations(self) -> dict[str, type[Degradation]]:
        """name -> Degradation class, sorted by name."""
        return {k: v[0] for k, v in sorted(self.components['degradation'].items())}

    @property
    def losses(self) -> dict[str, type[Loss]]:
        """name -> Loss class, sorted by name."""
        return {k: v[0] for k, v in sorted(self.components['loss'].items())}

    @property
    def detectors(self) -> dict[str, type[LandmarkDetector]]:
        """name -> LandmarkDetector class, sorted by name."""
        return {k: v[0] for k, v in sorted(self.components['detector'].items())}

    @property
    def broken(self) -> dict[str, str]:
        """plugin name -> error of every plugin that was skipped."""
        return {n: p.error for n, p in self.plugins.items() if p.error}

    def _build(self, kind: str, spec, overrides: dict[str, Any]):
        """An instance of the ``kind`` named by ``spec`` (an instance of the base class is returned as is)."""
        base = _BASES[kind]
        if isinstance(spec, base):
            if overrides:
                raise SpecError(f'{kind} {spec.name!r}: keyword overrides {", ".join(sorted(overrides))} need a spec '
                                'string, not a built instance')
            return spec
        name, kwargs = parse_spec(spec)
        table = self.components[kind]
        if name not in table:
            valid = ', '.join(sorted(table)) or 'none installed'
            raise SpecError(f'{kind} spec {spec!r}: unknown {kind} {name!r}; available: {valid}')
        cls, plugin = table[name]
        try:
            return cls(**{**kwargs, **overrides})
        except ValueError:
            raise   # a SpecError or the component's own check: it names the component and the parameter
        except Exception as e:  # noqa: BLE001 - a third party's bug, named, instead of a bare traceback
            raise PluginError(f'{kind} {name!r} (plugin {plugin!r}): building it from {spec!r} failed '
                              f'({exc_line(e)})') from e

    def origin(self, component) -> str:
        """``"plugin 'name'"`` for an instance of a registered component class, else ``'not a registered plugin'``
        (a component built in user code and passed in directly)."""
        entry = self.components.get(getattr(component, 'kind', ''), {}).get(getattr(component, 'name', ''))
        if entry is not None and type(component) is entry[0]:
            return f'plugin {entry[1]!r}'
        return 'not a registered plugin'

    def build_degradation(self, spec: str | Degradation, **overrides) -> Degradation:
        """A Degradation from ``name`` or ``name:key=value,...`` (keyword overrides win)."""
        return self._build('degradation', spec, overrides)

    def build_loss(self, spec: str | Loss, **overrides) -> Loss:
        """A Loss from ``name`` or ``name:key=value,...`` (keyword overrides win)."""
        return self._build('loss', spec, overrides)

    def build_detector(self, spec: str | LandmarkDetector, **overrides) -> LandmarkDetector:
        """A LandmarkDetector from ``name`` or ``name:key=value,...``."""
        return self._build('detector', spec, overrides)

    def format_plugin_list(self) -> str:
        """Each plugin (distribution and version), what it provides, and each parameter with default and help."""
        lines = []
        for name, info in sorted(self.plugins.items()):
            origin = f'{info.dist} {info.version}'.strip() or 'registered directly'
            lines.append(f'{name} ({origin})' + (f'  BROKEN: {info.error}' if info.error else ''))
            for kind, names in sorted(info.provides.items()):
                for cname in names:
                    cls = self.components[kind][cname][0]
                    flag = '  [simulation only]' if getattr(cls, 'simulate_only', False) else ''
                    if kind in ('degradation', 'loss') and not flag and not getattr(cls, 'cuda_graph_safe', False):
                        flag = '  [not cuda_graph_safe: a run using it steps eagerly]'
                    lines.append(f'  {kind} {cname}: {cls.help}{flag}')
                    lines += [f'      {p.name}={p.default!r}  ({p.type.__name__}'
                              + (f', {"|".join(map(str, p.choices))}' if p.choices else '')
                              + (f', {p.range_text()}' if p.bounds else '') + f')  {p.help}'
                              for p in cls.params]
        return '\n'.join(lines) if lines else 'no ganinv plugins installed'


@functools.lru_cache(maxsize=None)
def get_registry() -> Registry:
    """The process-wide registry of installed plugins (built once; ``get_registry.cache_clear()`` rebuilds)."""
    return Registry()


def format_plugin_list() -> str:
    """The installed plugins, for ``ganinv-run --list-plugins``."""
    return get_registry().format_plugin_list()

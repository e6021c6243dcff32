"""ganinv's plugin API: hooks, base classes, typed parameters and the registry.

This is the only module a plugin author needs::

    from ganinv_core.hooks import Degradation, Loss, Param, hookimpl

See docs/plugins.md.
"""
from ._base import Degradation, LandmarkDetector, Loss, LossContext, Pipeline
from ._blame import blame, blamed, culprit
from ._registry import PluginError, PluginInfo, PluginWarning, Registry, format_plugin_list, get_registry, strict_mode
from ._spec import Param, SpecError, parse_spec
from ._specs import GanInvSpecs, hookimpl, hookspec

__all__ = ['Degradation', 'GanInvSpecs', 'LandmarkDetector', 'Loss', 'LossContext', 'Param', 'Pipeline',
           'PluginError', 'PluginInfo', 'PluginWarning', 'Registry', 'SpecError', 'blame', 'blamed', 'culprit',
           'format_plugin_list', 'get_registry', 'hookimpl', 'hookspec', 'parse_spec', 'strict_mode']

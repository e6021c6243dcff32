"""Hook specifications of the ``ganinv`` entry-point group.

A plugin is a module (or any object) with functions decorated by :data:`hookimpl` whose names match the
specifications below. Every hook takes no argument and returns an iterable of classes; the registry
flattens the answers of all plugins, checks each class and rejects duplicate names.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from ._base import Degradation, LandmarkDetector, Loss

PROJECT = 'ganinv'
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class GanInvSpecs:
    """The hooks a ganinv plugin may implement (each one is optional)."""

    @hookspec
    def ganinv_degradations(self) -> Iterable[type['Degradation']]:
        """Degradation classes this plugin contributes (subclasses of :class:`Degradation`).

        Example::

            @hookimpl
            def ganinv_degradations():
                return [Sepia]
        """

    @hookspec
    def ganinv_losses(self) -> Iterable[type['Loss']]:
        """Loss classes this plugin contributes (subclasses of :class:`Loss`)."""

    @hookspec
    def ganinv_landmark_detectors(self) -> Iterable[type['LandmarkDetector']]:
        """Landmark detector classes (subclasses of :class:`LandmarkDetector`), used by face alignment."""


#: hook name -> (kind used in messages and listings)
HOOKS = {'ganinv_degradations': 'degradation', 'ganinv_losses': 'loss',
         'ganinv_landmark_detectors': 'detector'}

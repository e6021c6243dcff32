"""Naming the plugin at fault when a component's code raises while it runs (not while it is built).

A degradation, loss or detector is third-party code called from deep inside the engine; its bug would otherwise
surface as a bare traceback ending in torch. ``blame`` finds the component in the traceback and turns the error
into one line naming it, its plugin and what the engine was doing.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from ganinv_core._errors import exc_line, out_of_memory

from ._base import _Configurable


def culprit(exc: BaseException) -> _Configurable | None:
    """The component whose method raised ``exc``: the outermost traceback frame whose ``self`` is a degradation,
    loss or detector (the one the engine called), searched along the chain of causes; None when there is none."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            obj = tb.tb_frame.f_locals.get('self')
            if isinstance(obj, _Configurable):
                return obj
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__
    return None


def blamed(e: Exception, when: str, error: type[Exception]) -> Exception | None:
    """``e``, raised by a component's code, as an ``error`` whose one line names it; None where ``e`` is to pass
    through unchanged (raised elsewhere: the engine, torch itself; an ``error`` already; out of memory).

    The line: ``"{kind} {name!r} (plugin {plugin!r}) failed {when}: {TypeName}: {first line}"``.
    """
    who = None if isinstance(e, error) or out_of_memory(e) else culprit(e)
    if who is None:
        return None
    import ganinv_core.hooks as hooks   # the registry the run built its components from (tests replace it)
    return error(f'{who.kind} {who.name!r} ({hooks.get_registry().origin(who)}) failed {when}: {exc_line(e)}')


@contextlib.contextmanager
def blame(when: str, error: type[Exception]) -> Iterator[None]:
    """Re-raise an exception from a component's code as ``blamed`` makes it, chained to the original; others
    (``KeyboardInterrupt`` included) pass through unchanged.

    Args:
        when: what was running, e.g. ``'before the first step'``.
        error: the exception class to raise (one taking a message).
    """
    try:
        yield
    except Exception as e:
        named = blamed(e, when, error)
        if named is None:
            raise
        raise named from e

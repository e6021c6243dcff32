"""Naming the plugin at fault when a component's code raises while it runs (not while it is built).

A degradation, loss or detector is third-party code called from deep inside the engine; its bug would otherwise
surface as a bare traceback ending in torch. ``blame`` finds the component in the traceback and turns the error
into one line naming it, its plugin and what the engine was doing.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from ganinv_core._errors import exc_line

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


def _is_oom(e: BaseException) -> bool:
    """Out of device memory is the run's size, not the component's fault."""
    import torch
    return isinstance(e, torch.OutOfMemoryError)


@contextlib.contextmanager
def blame(when: str, error: type[Exception]) -> Iterator[None]:
    """Re-raise an exception from a component's code as ``error`` with one line naming it.

    ``"{kind} {name!r} (plugin {plugin!r}) failed {when}: {TypeName}: {first line}"``, chained to the original.
    Exceptions raised elsewhere (the engine, torch itself), an ``error`` already, out-of-memory errors and
    ``KeyboardInterrupt`` pass through unchanged.

    Args:
        when: what was running, e.g. ``'at step 12'``.
        error: the exception class to raise (one taking a message).
    """
    try:
        yield
    except Exception as e:
        who = None if isinstance(e, error) or _is_oom(e) else culprit(e)
        if who is None:
            raise
        import ganinv_core.hooks as hooks   # the registry the run built its components from (tests replace it)
        raise error(f'{who.kind} {who.name!r} ({hooks.get_registry().origin(who)}) failed {when}: '
                    f'{exc_line(e)}') from e

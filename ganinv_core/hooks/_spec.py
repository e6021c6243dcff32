"""Typed parameters and spec strings: ``name`` or ``name:key=value,key=value``."""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Iterable, Mapping

_NAME = re.compile(r'^[a-z][a-z0-9_.\-]*$')
_TRUE, _FALSE = {'1', 'true', 'yes', 'on'}, {'0', 'false', 'no', 'off'}


class SpecError(ValueError):
    """A spec string or a parameter value is not valid (one line naming the spec and what is valid)."""


@dataclasses.dataclass(frozen=True)
class Param:
    """One declared parameter of a degradation, loss or detector.

    Args:
        name: key in spec strings and keyword argument of the constructor.
        type: one of ``int``, ``float``, ``str``, ``bool``.
        default: value used when the key is absent (``None`` allowed: "not set").
        help: one line shown by ``ganinv-run --list-plugins``.
        choices: optional tuple of allowed values.
        bounds: optional ``(low, high)`` for an ``int`` or ``float``, both included; either may be None (no bound).
    """
    name: str
    type: type
    default: Any
    help: str
    choices: tuple | None = None
    bounds: tuple | None = None

    def __post_init__(self):
        if self.type not in (int, float, str, bool):
            raise SpecError(f'Param {self.name!r}: type must be int, float, str or bool, not {self.type!r}')
        if self.bounds is not None:
            if self.type not in (int, float) or len(self.bounds) != 2:
                raise SpecError(f'Param {self.name!r}: bounds must be (low, high) and only for an int or a float')
            if self.default is not None and not self.within(self.default):
                raise SpecError(f'Param {self.name!r}: default {self.default!r} is outside {self.range_text()}')

    def within(self, value) -> bool:
        """``value`` lies within ``bounds`` (always, without bounds)."""
        lo, hi = self.bounds or (None, None)
        return (lo is None or value >= lo) and (hi is None or value <= hi)

    def range_text(self) -> str:
        """``'[low, high]'``, ``'>= low'`` or ``'<= high'`` ('' without bounds)."""
        lo, hi = self.bounds or (None, None)
        return f'[{lo}, {hi}]' if lo is not None and hi is not None else \
            f'>= {lo}' if lo is not None else f'<= {hi}' if hi is not None else ''

    def requirement(self) -> str:
        """``range_text`` as a phrase: ``'in [low, high]'``, ``'>= low'`` or ``'<= high'``."""
        text = self.range_text()
        return f'in {text}' if text.startswith('[') else text

    def describe(self) -> str:
        """``name (type, default X[, one of a|b][, in [lo, hi]])``."""
        extra = f', one of {"|".join(map(str, self.choices))}' if self.choices else ''
        if self.bounds:
            extra += f', {self.requirement()}'
        return f'{self.name} ({self.type.__name__}, default {self.default!r}{extra})'


def coerce(param: Param, value: Any, where: str) -> Any:
    """Convert ``value`` (a spec-string text or a Python value) to ``param.type``, checking choices."""
    t, bad, given = param.type, None, value
    if value is None:
        return None
    if isinstance(value, str) and t is not str:
        v = value.strip().lower()
        try:
            value = (True if v in _TRUE else False if v in _FALSE else None) if t is bool else t(v)
        except ValueError:
            value = None
        bad = value is None
    elif t is bool:
        bad = not isinstance(value, (bool, int)) or value not in (0, 1)
        value = bool(value) if not bad else value
    elif t is int:
        bad = isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value
        value = int(value) if not bad else value
    elif t is float:
        bad = isinstance(value, bool) or not isinstance(value, (int, float))
        value = float(value) if not bad else value
    else:
        bad = not isinstance(value, str)
    if bad:
        raise SpecError(f'{where}: {param.name}={given!r} is not a valid {t.__name__}; expected {param.describe()}')
    if t is float and not math.isfinite(value):   # no parameter means anything at inf or nan
        raise SpecError(f'{where}: {param.name}={given!r} is not a finite number; expected {param.describe()}')
    if param.choices and value not in param.choices:
        raise SpecError(f'{where}: {param.name}={value!r} is not one of {"|".join(map(str, param.choices))}')
    if not param.within(value):
        raise SpecError(f'{where}: {param.name}={value!r} must be {param.requirement()}')
    return value


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``name:key=value,key=value`` into the name and a dict of raw texts.

    Raises:
        SpecError: empty name, a malformed ``key=value`` pair or a repeated key.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f'spec {spec!r}: expected "name" or "name:key=value,key=value"')
    name, _, rest = spec.strip().partition(':')
    name, kwargs = name.strip(), {}
    if not _NAME.match(name):
        raise SpecError(f'spec {spec!r}: {name!r} is not a valid name (lower case letters, digits, "-", "_", ".")')
    for item in filter(None, (s.strip() for s in rest.split(','))) if rest.strip() else ():
        key, eq, value = item.partition('=')
        key = key.strip().replace('-', '_')
        if not eq or not key:
            raise SpecError(f'spec {spec!r}: {item!r} is not key=value')
        if key in kwargs:
            raise SpecError(f'spec {spec!r}: key {key!r} given twice')
        kwargs[key] = value.strip()
    return name, kwargs


def resolve(params: Iterable[Param], kwargs: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Typed values for every declared parameter: defaults overridden by ``kwargs``.

    Raises:
        SpecError: an unknown key (listing the valid ones) or a value of the wrong type.
    """
    params = {p.name: p for p in params}
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        valid = ', '.join(p.describe() for p in params.values()) or 'none'
        raise SpecError(f'{where}: unknown key {unknown[0]!r}; valid keys: {valid}')
    return {k: coerce(p, kwargs[k], where) if k in kwargs else p.default for k, p in params.items()}

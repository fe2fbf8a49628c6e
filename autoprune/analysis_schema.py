"""analysis.json read back safely: its fields checked against the dataclasses' annotations.

An analysis file is edited, copied between machines and kept across versions; one wrong field (a string
where a number goes, a NaN, a missing list) is named by its path (``units[2].scale``) with what it should
be, as an :class:`~autoprune.errors.AnalysisError`, instead of failing later inside the search.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Unit:
    ...     name: str
    ...     scale: float
    >>> check_fields(Unit, {"name": "fc1", "scale": "big"}, "units[0]")
    Traceback (most recent call last):
    ...
    autoprune.errors.AnalysisError: field units[0].scale must be a finite number, got str 'big'
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, Mapping

from autoprune.errors import AnalysisError


def check_fields(kind: Any, data: Any, where: str) -> None:
    """Check ``data`` (read from JSON) against the annotations of dataclass ``kind``, recursively: every field
    present (or defaulted), numbers real and finite, strings strings, lists and objects of the declared items.
    AnalysisError names the first wrong field by its path (``units[2].scale``)."""
    hints = typing.get_type_hints(kind)
    if not isinstance(data, Mapping):
        raise AnalysisError(f"{where or 'the top level'} must be a JSON object, got {_shown(data)}")
    for f in fields(kind):
        path = f"{where}.{f.name}" if where else f.name
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise AnalysisError(f"field {path} is missing")
            continue
        _check_value(hints[f.name], data[f.name], path)


def _check_value(hint: Any, value: Any, path: str) -> None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        if isinstance(value, float) and not math.isfinite(value):
            raise AnalysisError(f"field {path} must be a finite number, got {value!r}")
        return
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        hint = next(a for a in args if a is not type(None))
        return _check_value(hint, value, path)
    if is_dataclass(hint):
        return check_fields(hint, value, path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise AnalysisError(f"field {path} must be a list, got {_shown(value)}")
        for i, item in enumerate(value):
            _check_value(args[0], item, f"{path}[{i}]")
        return
    if origin is dict:
        if not isinstance(value, Mapping):
            raise AnalysisError(f"field {path} must be an object, got {_shown(value)}")
        for key, item in value.items():
            if args[0] is float:
                try:
                    float(key)
                except ValueError:
                    raise AnalysisError(f"field {path} must have numbers as keys, got {key!r}") from None
            _check_value(args[1], item, f"{path}[{key!r}]")
        return
    if hint in (int, float):
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and (hint is float or
                                                                                        isinstance(value, int))
        if not number or not math.isfinite(value):
            raise AnalysisError(f"field {path} must be a finite {'integer' if hint is int else 'number'}, got "
                                f"{_shown(value)}")
        return
    if hint is str and not isinstance(value, str):
        raise AnalysisError(f"field {path} must be a string, got {_shown(value)}")


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"

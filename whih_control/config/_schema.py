"""Generic validation of TOML tables against the settings dataclasses.

Every field of a settings dataclass carries ``doc``/``unit``/``lo``/``hi``/``choices`` metadata
(see :func:`firmware_iface.spec.setting`). Problems are collected, never raised one by one, in the
form ``key.path: <what is wrong> (got <value>, allowed <range>)``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

T = TypeVar("T")

_BAD = object()
_hints_cache: dict[type, dict[str, Any]] = {}


def show(value: object) -> str:
    """Short rendering of a bad value for an error line."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def join(path: str, key: str) -> str:
    """Dotted key path."""
    return f"{path}.{key}" if path else key


def allowed(meta: Mapping[str, Any], kind: object) -> str:
    """The allowed range of a field, as shown in error lines."""
    if meta.get("choices"):
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    lo, hi = meta.get("lo"), meta.get("hi")
    names: dict[object, str] = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    name = names.get(kind, "a table")
    if lo is None and hi is None:
        return name
    left = "(" if meta.get("lo_open") else "["
    lo_s = "-inf" if lo is None else _num(lo)
    hi_s = "inf" if hi is None else _num(hi)
    unit = f" {meta['unit']}" if meta.get("unit") else ""
    return f"{name} in {left}{lo_s}...{hi_s}]{unit}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def field_hints(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass (cached)."""
    hints = _hints_cache.get(cls)
    if hints is None:
        hints = get_type_hints(cls)
        _hints_cache[cls] = hints
    return hints


def _check_number(
    value: object, kind: type, meta: Mapping[str, Any], path: str, problems: list[str]
) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(f"{path}: wrong type (got {show(value)}, allowed {allowed(meta, kind)})")
        return _BAD
    if kind is int and not isinstance(value, int):
        problems.append(f"{path}: not an integer (got {show(value)}, allowed {allowed(meta, kind)})")
        return _BAD
    if not math.isfinite(value):
        problems.append(f"{path}: must be finite (got {show(value)}, allowed {allowed(meta, kind)})")
        return _BAD
    lo, hi = meta.get("lo"), meta.get("hi")
    too_low = lo is not None and (value <= lo if meta.get("lo_open") else value < lo)
    if too_low or (hi is not None and value > hi):
        problems.append(f"{path}: out of range (got {show(value)}, allowed {allowed(meta, kind)})")
        return _BAD
    return float(value) if kind is float else value


def _check_value(
    kind: Any, value: object, meta: Mapping[str, Any], path: str, problems: list[str], bad: set[str]
) -> object:
    origin = get_origin(kind)
    if origin is typing.Union or origin is types.UnionType:
        options = [a for a in get_args(kind) if a is not type(None)]
        if value is None and len(options) < len(get_args(kind)):
            return None
        return _check_value(options[0], value, meta, path, problems, bad)
    if kind is bool:
        if not isinstance(value, bool):
            problems.append(f"{path}: wrong type (got {show(value)}, allowed true or false)")
            return _BAD
        return value
    if kind is int or kind is float:
        return _check_number(value, kind, meta, path, problems)
    if kind is str:
        if not isinstance(value, str):
            problems.append(f"{path}: wrong type (got {show(value)}, allowed {allowed(meta, str)})")
            return _BAD
        choices = meta.get("choices")
        if choices and value not in choices:
            problems.append(f"{path}: unknown value (got {show(value)}, allowed {allowed(meta, str)})")
            return _BAD
        return value
    if origin is tuple:
        item = get_args(kind)[0]
        if not isinstance(value, list | tuple):
            problems.append(
                f"{path}: wrong type (got {show(value)}, allowed a list of {allowed(meta, item)})"
            )
            return _BAD
        before = len(problems)
        items = [_check_value(item, v, meta, f"{path}[{i}]", problems, bad) for i, v in enumerate(value)]
        return _BAD if len(problems) > before else tuple(items)
    if dataclasses.is_dataclass(kind):
        before = len(problems)
        built = build(typing.cast(type, kind), value, path, problems, bad)
        return _BAD if built is None or len(problems) > before else built
    raise TypeError(f"{path}: unsupported settings type {kind!r}")  # a bug in a section class


def build(
    cls: type[T], data: object, path: str, problems: list[str], bad: set[str] | None = None
) -> T | None:
    """Validate ``data`` (a table) into ``cls``, appending a line to ``problems`` for each fault.

    A bad field is replaced by its default so that cross-field checks can still run on the rest;
    its key path goes into ``bad`` so those checks can skip it. Returns None only when no
    object can be made (not a table, or a required key bad or missing).
    """
    bad = set() if bad is None else bad
    if not isinstance(data, Mapping):
        problems.append(f"{path}: must be a table (got {show(data)}, allowed a TOML table)")
        bad.add(path)
        return None
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            problems.append(
                f"{join(path, str(key))}: unknown key (got {show(key)}, allowed {', '.join(fields)})"
            )
    hints = field_hints(cls)
    kwargs: dict[str, object] = {}
    complete = True
    any_bad = False
    for name, f in fields.items():
        key_path = join(path, name)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if name not in data:
            if required:
                problems.append(
                    f"{key_path}: missing required key (got nothing, allowed "
                    f"{allowed(f.metadata, hints[name])})"
                )
                bad.add(key_path)
                complete = False
            continue
        value = _check_value(hints[name], data[name], f.metadata, key_path, problems, bad)
        if value is _BAD:
            bad.add(key_path)
            any_bad = True
            complete = complete and not required
        else:
            kwargs[name] = value
    if not complete:
        return None
    obj = cls(**kwargs)
    check = getattr(obj, "problems", None)
    if callable(check) and not any_bad:
        for sub, text in check():
            problems.append(f"{join(path, sub)}: {text}")
            bad.add(join(path, sub))
    return obj


def describe(cls: type) -> list[tuple[str, str, str]]:
    """(key, allowed range, meaning) for every field of a settings dataclass, for docs."""
    hints = field_hints(cls)
    return [
        (f.name, allowed(f.metadata, hints[f.name]), str(f.metadata.get("doc", "")))
        for f in dataclasses.fields(cls)
    ]

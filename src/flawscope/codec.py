"""The manifest's strict JSON codec: frozen dataclass records to JSON and back, by their type hints.

One generic codec for every section, driven by the dataclasses' type hints, so that adding a field
is a one-line change and its JSON reading and writing cannot be forgotten. Reading is strict: an
unknown field, a missing required field or a wrong type is an :class:`InputError` naming the field
(``manifest.deploy.graph``). Free-form JSON (``Any``) is frozen into read-only mappings and tuples.
Torch-free.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any

from flawscope.decide.thresholds import ThresholdHistory
from flawscope.errors import FlawscopeError, InputError


def encode(value: Any) -> Any:
    """``value`` (a record, enum, mapping, sequence or JSON scalar) as JSON-ready data."""
    if isinstance(value, ThresholdHistory):
        return value.to_list()
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [encode(v) for v in value]
    return value


def _freeze(value: Any) -> Any:
    """Free-form JSON made immutable: objects become read-only mappings, arrays tuples."""
    if isinstance(value, Mapping):
        return types.MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _bad(where: str, value: Any, expected: str) -> InputError:
    shown = repr(value) if len(repr(value)) < 80 else f"a {type(value).__name__}"
    return InputError(where, f"must be {expected}, got {shown}")


def decode(tp: Any, value: Any, where: str) -> Any:
    """JSON ``value`` read as type ``tp``; ``where`` names it in errors.

    Raises:
        InputError: naming ``where`` (or the field under it) for an unknown, missing or mistyped field.
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return _freeze(value)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise _bad(where, value, "given (not null)")
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return decode(option, value, where)
            except InputError as exc:
                errors.append(exc)
        raise errors[0]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise _bad(where, value, f"one of {', '.join(repr(m.value) for m in tp)}") from None
    if tp is ThresholdHistory:
        if not isinstance(value, list):
            raise _bad(where, value, "a list of threshold versions")
        return ThresholdHistory.from_list(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise _bad(where, value, "true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(where, value, "a whole number")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad(where, value, "a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _bad(where, value, "text")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise _bad(where, value, "a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise _bad(where, value, f"a list of {len(args)} values")
        return tuple(decode(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin in (Mapping, dict):
        if not isinstance(value, Mapping):
            raise _bad(where, value, "an object")
        item = typing.get_args(tp)[1]
        return types.MappingProxyType({str(k): decode(item, v, f"{where}.{k}") for k, v in value.items()})
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _decode_record(tp, value, where)
    raise TypeError(f"{where}: the manifest codec has no rule for {tp!r}")  # a programming error


def _decode_record(cls: type, value: Any, where: str) -> Any:
    if not isinstance(value, Mapping):
        raise _bad(where, value, "an object")
    declared = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(value) - set(declared))
    if unknown:
        raise InputError(
            where,
            f"unknown field(s) {', '.join(unknown)}: the bundle was written by a newer flawscope "
            "(upgrade flawscope) or edited by hand",
        )
    missing = sorted(
        name
        for name, f in declared.items()
        if name not in value and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise InputError(where, f"missing field(s) {', '.join(missing)}")
    hints = _hints(cls)
    values = {name: decode(hints[name], value[name], f"{where}.{name}") for name in value}
    try:
        return cls(**values)
    except FlawscopeError as exc:
        raise InputError(where, str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise InputError(where, f"is not valid ({exc})") from None

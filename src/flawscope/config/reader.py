"""Typed conversion of TOML tables to the configuration's dataclasses, with every problem's line.

:func:`key_lines` finds the line of each key (tomllib does not keep positions); :class:`Reader`
builds a dataclass from a table and collects problems instead of stopping at the first.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from flawscope.config.records import Problem

# --------------------------------------------------------------------------- where keys are


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(
    r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*="""
)


def _split_key(text: str) -> list[str]:
    parts = re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", text)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


def key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """The line of every table header and key of a TOML text.

    Keys of ``[[array]]`` tables get the index of their table: ``("camera", 0, "source")``. Lines
    inside multi-line strings and arrays are skipped (a best effort, good for valid files).
    """
    lines: dict[tuple[str | int, ...], int] = {}
    counts: dict[tuple[str, ...], int] = {}
    table: tuple[str | int, ...] = ()
    in_string = ""
    depth = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if in_string:
            if in_string in raw:
                in_string = ""
            continue
        if depth == 0:
            header = _HEADER.match(raw)
            if header:
                names = tuple(_split_key(header.group(2)))
                if header.group(1) == "[[":
                    index = counts.get(names, 0)
                    counts[names] = index + 1
                    table = (*names, index)
                else:
                    table = _index_path(names, counts)
                lines.setdefault(table, number)
                continue
            key = _KEY.match(raw)
            if key:
                lines.setdefault((*table, *_split_key(key.group(1))), number)
        value = raw.split("=", 1)[1] if depth == 0 and "=" in raw else raw
        for quote in ('"""', "'''"):
            if value.count(quote) % 2 == 1:
                in_string = quote
        stripped = re.sub(r'"[^"]*"|\'[^\']*\'', "", value.split("#", 1)[0])
        depth = max(0, depth + stripped.count("[") - stripped.count("]"))
    return lines


def _index_path(names: tuple[str, ...], counts: dict[tuple[str, ...], int]) -> tuple[str | int, ...]:
    """``[camera.sub]`` after ``[[camera]]`` belongs to the latest camera table."""
    out: list[str | int] = []
    for i, name in enumerate(names):
        out.append(name)
        prefix = names[: i + 1]
        if prefix in counts and i < len(names) - 1:
            out.append(counts[prefix] - 1)
    return tuple(out)


# ------------------------------------------------------------------------ typed conversion


class Reader:
    """Converts TOML tables to dataclasses, collecting problems instead of stopping at the first."""

    def __init__(self, base: Path, lines: Mapping[tuple[str | int, ...], int]) -> None:
        self.base = base
        self.lines = lines
        self.problems: list[Problem] = []

    def line(self, path: tuple[str | int, ...]) -> int | None:
        """The line of ``path``, or of the nearest table above it that the file holds."""
        for end in range(len(path), 0, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return None

    @staticmethod
    def name(path: tuple[str | int, ...]) -> str:
        """``("camera", 0, "source")`` as ``camera[0].source``."""
        out = ""
        for part in path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out

    def problem(self, path: tuple[str | int, ...], message: str) -> None:
        """Record one problem at ``path`` (with its line)."""
        self.problems.append(Problem(self.name(path), message, self.line(path)))

    def table(self, cls: type[Any], data: Any, path: tuple[str | int, ...], **given: Any) -> Any:
        """Build dataclass ``cls`` from a TOML table (``given`` fills fields the file does not hold)."""
        if not isinstance(data, dict):
            self.problem(path, f"must be a table, got {kind_of(data)}")
            return None
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        values: dict[str, Any] = dict(given)
        bad: set[str] = set()
        for key, value in data.items():
            if key in given or key not in fields:
                known = ", ".join(k for k in fields if k not in given)
                self.problem((*path, key), f"unknown key (known keys: {known})")
                if key not in given:  # a given field keeps its given value
                    bad.add(key)
                continue
            converted = self.value(hints[key], value, (*path, key), fields[key].metadata)
            if converted is BAD:
                bad.add(key)
            else:
                values[key] = converted
        missing = False
        for name, spec in fields.items():
            required = spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
            if name not in values and required:
                if name not in bad:
                    self.problem((*path, name), "is required")
                missing = True
        if missing:
            return None
        # Cross-field checks run even when some fields were bad (those keep their defaults), so
        # that every problem is reported at once; problems about the bad fields are not repeated.
        values = {k: v for k, v in values.items() if k not in bad}
        instance = cls(**values)
        validate = getattr(instance, "validate", None)
        found = [p for p in validate() if _split_key(p.where)[0] not in bad] if callable(validate) else []
        for p in found:
            self.problem((*path, *_split_key(p.where)), p.message)
        return None if bad or found or given.keys() & data.keys() else instance

    def value(self, tp: Any, value: Any, path: tuple[str | int, ...], meta: Mapping[str, Any]) -> Any:
        """``value`` converted to type ``tp`` (:data:`BAD` after recording why it cannot be)."""
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (types.UnionType, typing.Union):
            inner = [a for a in args if a is not type(None)]
            return self.value(inner[0], value, path, meta)
        if origin is Literal:
            if value not in args:
                choices = ", ".join(repr(a) for a in args)
                self.problem(path, f"must be one of {choices}, got {value!r}")
                return BAD
            return value
        if origin is tuple:
            if not isinstance(value, list):
                self.problem(path, f"must be a list, got {kind_of(value)}")
                return BAD
            items = [self.value(args[0], v, path, meta) for v in value]
            return BAD if any(i is BAD for i in items) else tuple(items)
        if origin is dict:
            if not isinstance(value, dict):
                self.problem(path, f"must be a table, got {kind_of(value)}")
                return BAD
            out = {k: self.value(args[1], v, (*path, k), meta) for k, v in value.items()}
            return BAD if any(v is BAD for v in out.values()) else out
        if dataclasses.is_dataclass(tp):
            built = self.table(tp, value, path)  # type: ignore[arg-type]
            return BAD if built is None else built
        return self.scalar(tp, value, path, meta)

    def scalar(self, tp: Any, value: Any, path: tuple[str | int, ...], meta: Mapping[str, Any]) -> Any:
        """A bool, int, float, text or path, range-checked by the field's ``min``/``max`` metadata."""
        if tp is bool:
            if not isinstance(value, bool):
                self.problem(path, f"must be true or false, got {kind_of(value)} {value!r}")
                return BAD
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                self.problem(path, f"must be a whole number, got {kind_of(value)} {value!r}")
                return BAD
        elif tp is float:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                self.problem(path, f"must be a number, got {kind_of(value)} {value!r}")
                return BAD
            value = float(value)
        elif tp is str or tp is Path:
            if not isinstance(value, str):
                self.problem(path, f"must be text, got {kind_of(value)} {value!r}")
                return BAD
            if tp is Path:
                if not value.strip():
                    self.problem(path, "must be a path, got an empty string")
                    return BAD
                return Path(os.path.normpath((self.base / Path(value).expanduser()).absolute()))
            return value
        else:  # pragma: no cover - a field type this reader does not know is a programming error
            raise TypeError(f"config field type {tp!r} is not supported")
        if "min" in meta and value < meta["min"]:
            self.problem(path, f"must be >= {meta['min']}, got {value}")
            return BAD
        if "max" in meta and value > meta["max"]:
            self.problem(path, f"must be <= {meta['max']}, got {value}")
            return BAD
        return value


BAD = object()  # a value that could not be converted (its problem is recorded)


def kind_of(value: Any) -> str:
    """How a TOML value's type reads in a message (``a whole number``)."""
    return {
        bool: "a boolean",
        int: "a whole number",
        float: "a number",
        str: "text",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)

"""The audit record's schema, derived from its one declaration: :class:`flawscope.types.InspectionRecord`.

Each field's column type and nullability follow from its Python type, its default from the
dataclass, whether it is hashed and which schema version added it from the field's metadata
(:func:`flawscope.types.added`). The table (:mod:`flawscope.audit.schema`), normalisation, hashing
and the row codec (:mod:`flawscope.audit.chain`) and the export (:mod:`flawscope.audit.export`)
all iterate over :func:`record_fields`; a field whose type has no rule here is an error at the first
use, never a silently skipped column.

=======================  ============  =========================================================
Python type              kind          column
=======================  ============  =========================================================
``str``                  text          TEXT NOT NULL
``str | None``           text          TEXT (NULL for ``None``)
``float``                float         DOUBLE (NULL for NaN: SQLite cannot store NaN)
``int``                  int           BIGINT NOT NULL
``int | None``           int           BIGINT (NULL for ``None``)
``bool``                 bool          BOOLEAN NOT NULL
``Outcome``              outcome       TEXT NOT NULL (the enum's value)
``tuple[Region, ...]``   regions       TEXT NOT NULL (canonical JSON)
=======================  ============  =========================================================
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass
from typing import Any

from flawscope.types import HASHED, SINCE, InspectionRecord, Outcome, Region

KINDS_OF_FIELD = ("text", "float", "int", "bool", "outcome", "regions")


@dataclass(frozen=True)
class FieldSpec:
    """One field of the audit record, as the database, the hash and the export see it.

    Attributes:
        name: field and column name.
        kind: one of :data:`KINDS_OF_FIELD`.
        nullable: the column may hold NULL (``None``, or NaN for a float).
        default: the dataclass default (:data:`dataclasses.MISSING` for a required field).
        hashed: part of the record's hash (all but ``record_hash``).
        since: audit schema version that added the field (1: the first schema).
    """

    name: str
    kind: str
    nullable: bool
    default: Any
    hashed: bool = True
    since: int = 1

    @property
    def required(self) -> bool:
        """The record cannot be made without a value for this field."""
        return self.default is dataclasses.MISSING


def _kind(name: str, tp: Any) -> tuple[str, bool]:
    origin = typing.get_origin(tp)
    optional = False
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"InspectionRecord.{name}: {tp} has no audit column rule (one type or None)")
        tp, optional = args[0], True
        origin = typing.get_origin(tp)
    if origin is tuple and typing.get_args(tp) == (Region, Ellipsis) and not optional:
        return "regions", False
    simple = {str: "text", float: "float", int: "int", bool: "bool", Outcome: "outcome"}
    if tp in simple and not (optional and tp in (float, bool, Outcome)):
        kind = simple[tp]
        return kind, optional or kind == "float"
    raise TypeError(f"InspectionRecord.{name}: {tp} has no audit column rule (see flawscope.audit.fields)")


@functools.cache
def record_fields() -> tuple[FieldSpec, ...]:
    """Every field of the audit record, in declaration order.

    Raises:
        TypeError: a field has a type without a column rule, or a later field has no default.
    """
    hints = typing.get_type_hints(InspectionRecord)
    specs = []
    for f in dataclasses.fields(InspectionRecord):
        kind, nullable = _kind(f.name, hints[f.name])
        since = int(f.metadata.get(SINCE, 1))
        if since > 1 and f.default is dataclasses.MISSING:
            raise TypeError(f"InspectionRecord.{f.name}: a field added later needs a default for old records")
        specs.append(FieldSpec(f.name, kind, nullable, f.default, bool(f.metadata.get(HASHED, True)), since))
    return tuple(specs)


def names(kind: str | None = None, *, nullable: bool | None = None) -> tuple[str, ...]:
    """Names of the fields of a kind (all when ``None``), optionally only (non-)nullable ones."""
    return tuple(
        s.name
        for s in record_fields()
        if (kind is None or s.kind == kind) and (nullable is None or s.nullable == nullable)
    )


def fields_at(schema_version: int) -> tuple[FieldSpec, ...]:
    """The fields a store of this schema version has columns for."""
    return tuple(s for s in record_fields() if s.since <= schema_version)

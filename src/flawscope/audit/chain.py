"""Hash chain of the audit trail: record normalisation, canonical JSON, hashing and the row codec.

All four are derived from the one declaration of the record (:mod:`flawscope.audit.fields`): each
iterates over every field and applies its kind's rule, so a field cannot be forgotten by one of
them.

A record's hash is ``sha256(canonical JSON of its hashed fields)``. The canonical JSON has sorted
keys, no whitespace, ASCII only, floats written as Python's ``repr`` (the shortest text that reads
back to the same float64) and non-finite floats as the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"``. Because both SQLite REAL and PostgreSQL double precision store float64 exactly, the
hash recomputed from what the database returns equals the hash computed at append time.

Why old records keep their hashes when fields are added (hash scheme v2): a field added by a later
schema version (``since > 1``) enters the canonical JSON only when its value differs from its
default. A record written before the field existed has, after the migration adds the column, the
default there, so its canonical JSON and hash are byte for byte what they were (scheme v1 is scheme
v2 on such records, which is why one scheme serves every record and no per-record scheme tag is
needed). A new record with a non-default value hashes it, so changing it afterwards, even to the
default, changes the hash. The alternative, a scheme tag per record or range, would make every
verifier carry every past scheme; this keeps one rule that older verifiers already apply to old data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from flawscope.audit.fields import FieldSpec, names, record_fields
from flawscope.audit.kinds import KINDS
from flawscope.errors import InputError
from flawscope.types import InspectionRecord, Outcome, Region

#: ``prev_hash`` of the first record of every log.
GENESIS_HASH = "0" * 64
#: Name of the hashing scheme, stored in the log's ``meta`` table (v1 equals v2 on v1 records).
HASH_SCHEME = "sha256-canonical-json-v2"
HASH_SCHEMES = ("sha256-canonical-json-v1", HASH_SCHEME)

FIELDS: tuple[str, ...] = tuple(s.name for s in record_fields())
HASHED_FIELDS: tuple[str, ...] = tuple(s.name for s in record_fields() if s.hashed)
FLOAT_FIELDS = names("float")
STR_FIELDS = names("text", nullable=False)
OPTIONAL_INT_FIELDS = names("int", nullable=True)
BOOL_FIELDS = names("bool")
_INT64_MAX = 2**63 - 1


def _where(record: Any, name: str) -> str:
    return f"{name} of the record of part {getattr(record, 'part_id', '?')!r}"


def _norm_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InputError(where, f"must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise InputError(where, "contains a NUL character, which databases cannot store")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(where, f"is not valid Unicode text ({exc.reason})") from None
    return value


def _norm_float(value: Any, where: str) -> float:
    if isinstance(value, bool | str | bytes):
        raise InputError(where, f"must be a number, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InputError(where, f"must be a number, got {value!r}") from None
    # SQLite stores -0.0 as 0 and would read it back without its sign: hash the value it will return.
    return out + 0.0


def _norm_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise InputError(where, f"must be an integer, got {value!r}")
    out = int(value.__index__())
    if not -_INT64_MAX - 1 <= out <= _INT64_MAX:
        raise InputError(where, f"{out} does not fit in a 64-bit integer")
    return out


def _norm_region(region: Any, where: str) -> Region:
    if not isinstance(region, Region):
        raise InputError(where, f"must hold Region records, got {type(region).__name__}")
    if len(region.bbox) != 4 or len(region.centroid) != 2:
        raise InputError(where, "a region needs a 4-value bbox and a 2-value centroid")
    area_mm2 = None if region.area_mm2 is None else _norm_float(region.area_mm2, where)
    if region.category is not None and not isinstance(region.category, str):
        raise InputError(where, f"a region's category must be text, got {region.category!r}")
    return Region(
        bbox=tuple(_norm_int(v, where) for v in region.bbox),  # type: ignore[arg-type]
        area_px=_norm_int(region.area_px, where),
        peak=_norm_float(region.peak, where),
        centroid=tuple(_norm_float(v, where) for v in region.centroid),  # type: ignore[arg-type]
        area_mm2=area_mm2,
        category=region.category,
    )


def _norm_bool(value: Any, where: str) -> bool:
    # numpy booleans have __bool__ but are not bool; anything else (0/1, "true") is a mistake.
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise InputError(where, f"must be true or false, got {value!r}")


def _norm_outcome(value: Any, where: str) -> Outcome:
    try:
        return Outcome(value)
    except ValueError:
        allowed = ", ".join(o.value for o in Outcome)
        raise InputError(where, f"{value!r} is not one of {allowed}") from None


def _norm_regions(value: Any, where: str) -> tuple[Region, ...]:
    if not isinstance(value, tuple | list):
        raise InputError(where, "must be a tuple of Region records")
    return tuple(_norm_region(r, where) for r in value)


_NORMALIZE: dict[str, Callable[[Any, str], Any]] = {
    "text": _norm_str,
    "float": _norm_float,
    "int": _norm_int,
    "bool": _norm_bool,
    "outcome": _norm_outcome,
    "regions": _norm_regions,
}


def _norm_field(spec: FieldSpec, value: Any, where: str) -> Any:
    if value is None and spec.nullable and spec.kind != "float":
        return None
    return _NORMALIZE[spec.kind](value, where)


def normalize_record(record: InspectionRecord) -> InspectionRecord:
    """Check a record's field types and its kind's rules, and convert numpy scalars and the like.

    The result holds exactly the values the database will return, so that its hash can be recomputed.

    Args:
        record: the record as the line (or a person's action) made it.

    Returns:
        An equal record with plain ``str``/``float``/``int``/``bool`` fields and ``outcome`` an ``Outcome``.

    Raises:
        InputError: a field has the wrong type or a value no database can store, or the record
            breaks its kind's rules (:mod:`flawscope.audit.kinds`).
    """
    if not isinstance(record, InspectionRecord):
        raise InputError("record", f"must be an InspectionRecord, got {type(record).__name__}")
    values = {
        spec.name: _norm_field(spec, getattr(record, spec.name), _where(record, spec.name))
        for spec in record_fields()
    }
    kind = KINDS.get(values["kind"])
    if kind is None:
        raise InputError(_where(record, "kind"), f"{values['kind']!r} is not one of {', '.join(KINDS)}")
    if kind.refers_to and values["ref_seq"] is None:
        raise InputError(_where(record, "ref_seq"), f"a {kind.name} record must name the record it is about")
    if not kind.refers_to and values["ref_seq"] is not None:
        raise InputError(_where(record, "ref_seq"), f"a {kind.name} record is about no other record")
    for name in kind.required:
        if not (values[name] or "").strip():  # optional text fields (category) are None when unset
            raise InputError(_where(record, name), f"a {kind.name} record needs a non-empty {name}")
    if kind.outcomes and values["outcome"] not in kind.outcomes:
        allowed = ", ".join(o.value for o in kind.outcomes)
        raise InputError(_where(record, "outcome"), f"a {kind.name} record is one of {allowed}")
    return InspectionRecord(**values)


def _canon_float(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value + 0.0


def _canon_regions(regions: tuple[Region, ...]) -> list[dict[str, Any]]:
    # A region's category (a segmenter's or box detector's class) is written only when there is
    # one, so the canonical form, and the hash, of every record without one is unchanged.
    return [
        {
            "bbox": [int(v) for v in r.bbox],
            "area_px": int(r.area_px),
            "peak": _canon_float(float(r.peak)),
            "centroid": [_canon_float(float(v)) for v in r.centroid],
            "area_mm2": None if r.area_mm2 is None else _canon_float(float(r.area_mm2)),
            **({} if r.category is None else {"category": r.category}),
        }
        for r in regions
    ]


def _dumps(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _canon(spec: FieldSpec, value: Any) -> Any:
    if spec.kind == "regions":
        return _canon_regions(value)
    if spec.kind == "outcome":
        return Outcome(value).value
    if spec.kind == "float":
        return _canon_float(float(value))
    return value


def canonical_json(record: InspectionRecord, **place: Any) -> bytes:
    """The bytes that are hashed: the hashed fields in canonical JSON (see the module docstring).

    Args:
        record: a normalised record (see ``normalize_record``) with ``seq`` and ``prev_hash`` set.
        **place: field values that replace the record's (``seq``, ``prev_hash``).

    Returns:
        ASCII JSON with sorted keys and no whitespace.
    """
    doc: dict[str, Any] = {}
    for spec in record_fields():
        if not spec.hashed:
            continue
        value = _canon(spec, place[spec.name] if spec.name in place else getattr(record, spec.name))
        if spec.since > 1 and value == _canon(spec, spec.default):
            continue  # a later field at its default: records from before it existed hash unchanged
        doc[spec.name] = value
    return _dumps(doc).encode("ascii")


def compute_hash(record: InspectionRecord) -> str:
    """SHA-256 (hex) of the record's canonical JSON: the value its ``record_hash`` must have."""
    return hashlib.sha256(canonical_json(record)).hexdigest()


def encode_regions(regions: tuple[Region, ...]) -> str:
    """Regions as the JSON text stored in the ``regions`` column (the canonical form)."""
    return _dumps(_canon_regions(regions))


def _decanon_float(value: Any) -> float:
    # float() reads the "NaN"/"Infinity"/"-Infinity" strings of the canonical form as well as numbers.
    return float(value)


def decode_regions(text: str) -> tuple[Region, ...]:
    """Inverse of ``encode_regions``.

    Raises:
        ValueError: the text is not a list of regions.
    """
    items = json.loads(text)
    if not isinstance(items, list):
        raise ValueError("regions is not a JSON list")
    out = []
    for item in items:
        x0, y0, x1, y1 = (int(v) for v in item["bbox"])
        cx, cy = (_decanon_float(v) for v in item["centroid"])
        area_mm2 = item.get("area_mm2")
        out.append(
            Region(
                bbox=(x0, y0, x1, y1),
                area_px=int(item["area_px"]),
                peak=_decanon_float(item["peak"]),
                centroid=(cx, cy),
                area_mm2=None if area_mm2 is None else _decanon_float(area_mm2),
                category=item.get("category"),
            )
        )
    return tuple(out)


def record_to_row(record: InspectionRecord, nan_as_null: bool = True) -> dict[str, Any]:
    """Column values for a normalised record.

    Args:
        record: the record.
        nan_as_null: NaN floats become NULL (SQLite cannot store NaN); ``False`` keeps NaN, as
            Parquet can tell NaN from null.
    """
    row: dict[str, Any] = {}
    for spec in record_fields():
        value = getattr(record, spec.name)
        if spec.kind == "regions":
            row[spec.name] = encode_regions(value)
        elif spec.kind == "outcome":
            row[spec.name] = Outcome(value).value
        elif spec.kind == "float" and nan_as_null:
            row[spec.name] = None if math.isnan(value) else value
        else:
            row[spec.name] = value
    return row


def _from_column(spec: FieldSpec, value: Any) -> Any:
    if value is None:
        if spec.kind == "float":
            return math.nan
        if spec.nullable:
            return None
        raise ValueError(f"{spec.name} is NULL")
    if spec.kind == "regions":
        return decode_regions(value)
    if spec.kind == "outcome":
        return Outcome(value)
    if spec.kind == "float":
        return float(value)
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{spec.name} is {value!r}, not an integer")
        return value
    if spec.kind == "bool":
        # SQLite returns its booleans as 0/1.
        if value not in (0, 1) or isinstance(value, float):
            raise ValueError(f"{spec.name} is {value!r}, not a boolean")
        return bool(value)
    if not isinstance(value, str):
        raise ValueError(f"{spec.name} is {value!r}, not text")
    return value


def row_to_record(row: Mapping[Any, Any], schema_version: int | None = None) -> InspectionRecord:
    """Inverse of ``record_to_row``.

    Args:
        row: column values.
        schema_version: the schema of the store the row comes from; fields added after it take
            their defaults (``None``: the current schema, every field must be there).

    Raises:
        ValueError: a column is missing or holds a value no record can have (the row was edited
            by hand).
    """
    values: dict[str, Any] = {}
    for spec in record_fields():
        if schema_version is not None and spec.since > schema_version:
            values[spec.name] = spec.default
        elif spec.name not in row:
            raise ValueError(f"the row has no {spec.name} column")
        else:
            values[spec.name] = _from_column(spec, row[spec.name])
    return InspectionRecord(**values)


def link(record: InspectionRecord, seq: int, prev_hash: str) -> InspectionRecord:
    """The record with its place in the chain: ``seq``, ``prev_hash`` and the resulting ``record_hash``."""
    digest = hashlib.sha256(canonical_json(record, seq=seq, prev_hash=prev_hash)).hexdigest()
    return dataclasses.replace(record, seq=seq, prev_hash=prev_hash, record_hash=digest)

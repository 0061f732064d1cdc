"""Hash chain of the audit trail: record normalisation, canonical JSON, hashing and the row codec.

A record's hash is ``sha256(canonical JSON of every field but record_hash)``. The canonical JSON has
sorted keys, no whitespace, ASCII only, floats written as Python's ``repr`` (the shortest text that
reads back to the same float64) and non-finite floats as the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"``. Because both SQLite REAL and PostgreSQL double precision store float64 exactly, the
hash recomputed from what the database returns equals the hash computed at append time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from flawscope.errors import InputError
from flawscope.types import InspectionRecord, Outcome, Region

#: ``prev_hash`` of the first record of every log.
GENESIS_HASH = "0" * 64
#: Name of the hashing scheme, stored in the log's ``meta`` table.
HASH_SCHEME = "sha256-canonical-json-v1"

FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(InspectionRecord))
HASHED_FIELDS: tuple[str, ...] = tuple(name for name in FIELDS if name != "record_hash")
FLOAT_FIELDS = ("acquired_at", "score", "normalized_score", "latency_ms")
STR_FIELDS = (
    "part_id",
    "station",
    "image_sha256",
    "image_uri",
    "model_hash",
    "model_version",
    "source",
    "reason",
    "kind",
    "operator",
    "prev_hash",
    "record_hash",
)
OPTIONAL_INT_FIELDS = ("threshold_version", "ref_seq", "seq")
KINDS = ("inspection", "override")
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
    return Region(
        bbox=tuple(_norm_int(v, where) for v in region.bbox),  # type: ignore[arg-type]
        area_px=_norm_int(region.area_px, where),
        peak=_norm_float(region.peak, where),
        centroid=tuple(_norm_float(v, where) for v in region.centroid),  # type: ignore[arg-type]
        area_mm2=area_mm2,
    )


def normalize_record(record: InspectionRecord) -> InspectionRecord:
    """Check a record's field types and convert numpy scalars and the like to plain Python values.

    The result holds exactly the values the database will return, so that its hash can be recomputed.

    Args:
        record: the record as the line made it.

    Returns:
        An equal record with plain ``str``/``float``/``int`` fields and ``outcome`` an ``Outcome``.

    Raises:
        InputError: a field has the wrong type or a value no database can store.
    """
    if not isinstance(record, InspectionRecord):
        raise InputError("record", f"must be an InspectionRecord, got {type(record).__name__}")
    values: dict[str, Any] = {}
    for name in STR_FIELDS:
        values[name] = _norm_str(getattr(record, name), _where(record, name))
    for name in FLOAT_FIELDS:
        values[name] = _norm_float(getattr(record, name), _where(record, name))
    for name in OPTIONAL_INT_FIELDS:
        value = getattr(record, name)
        values[name] = None if value is None else _norm_int(value, _where(record, name))
    category = record.category
    values["category"] = None if category is None else _norm_str(category, _where(record, "category"))
    try:
        values["outcome"] = Outcome(record.outcome)
    except ValueError:
        allowed = ", ".join(o.value for o in Outcome)
        raise InputError(_where(record, "outcome"), f"{record.outcome!r} is not one of {allowed}") from None
    if not isinstance(record.regions, tuple | list):
        raise InputError(_where(record, "regions"), "must be a tuple of Region records")
    values["regions"] = tuple(_norm_region(r, _where(record, "regions")) for r in record.regions)
    if values["kind"] not in KINDS:
        raise InputError(_where(record, "kind"), f"{values['kind']!r} is not one of {', '.join(KINDS)}")
    return InspectionRecord(**values)


def _canon_float(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value + 0.0


def _canon_regions(regions: tuple[Region, ...]) -> list[dict[str, Any]]:
    return [
        {
            "bbox": [int(v) for v in r.bbox],
            "area_px": int(r.area_px),
            "peak": _canon_float(float(r.peak)),
            "centroid": [_canon_float(float(v)) for v in r.centroid],
            "area_mm2": None if r.area_mm2 is None else _canon_float(float(r.area_mm2)),
        }
        for r in regions
    ]


def _dumps(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def canonical_json(record: InspectionRecord, **place: Any) -> bytes:
    """The bytes that are hashed: every field but ``record_hash``, in canonical JSON.

    Args:
        record: a normalised record (see ``normalize_record``) with ``seq`` and ``prev_hash`` set.
        **place: field values that replace the record's (``seq``, ``prev_hash``).

    Returns:
        ASCII JSON with sorted keys and no whitespace.
    """
    doc: dict[str, Any] = {}
    for name in HASHED_FIELDS:
        value = place[name] if name in place else getattr(record, name)
        if name == "regions":
            doc[name] = _canon_regions(value)
        elif isinstance(value, Outcome):
            doc[name] = value.value
        elif isinstance(value, float):
            doc[name] = _canon_float(value)
        else:
            doc[name] = value
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
    for name in FIELDS:
        value = getattr(record, name)
        if name == "regions":
            row[name] = encode_regions(value)
        elif name == "outcome":
            row[name] = value.value
        elif name in FLOAT_FIELDS and nan_as_null:
            row[name] = None if math.isnan(value) else value
        else:
            row[name] = value
    return row


def row_to_record(row: Mapping[Any, Any]) -> InspectionRecord:
    """Inverse of ``record_to_row``.

    Raises:
        ValueError: a column holds a value no record can have (the row was edited by hand).
    """
    values: dict[str, Any] = {}
    for name in FIELDS:
        value = row[name]
        if name == "regions":
            values[name] = decode_regions(value)
        elif name == "outcome":
            values[name] = Outcome(value)
        elif name in FLOAT_FIELDS:
            values[name] = math.nan if value is None else float(value)
        elif name in OPTIONAL_INT_FIELDS:
            values[name] = None if value is None else int(value)
        elif name == "category" and value is None:
            values[name] = None
        else:
            if not isinstance(value, str):
                raise ValueError(f"{name} is {value!r}, not text")
            values[name] = value
    return InspectionRecord(**values)


def link(record: InspectionRecord, seq: int, prev_hash: str) -> InspectionRecord:
    """The record with its place in the chain: ``seq``, ``prev_hash`` and the resulting ``record_hash``."""
    digest = hashlib.sha256(canonical_json(record, seq=seq, prev_hash=prev_hash)).hexdigest()
    return dataclasses.replace(record, seq=seq, prev_hash=prev_hash, record_hash=digest)

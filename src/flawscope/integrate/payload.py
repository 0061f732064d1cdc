"""The JSON a result travels in (MQTT, webhooks), version 1, and the id that makes delivery idempotent.

The schema is published as a file, ``flawscope/integrate/schemas/result-v1.schema.json`` (JSON
Schema 2020-12; :func:`schema_path`). A consumer keys on ``id``: a record delivered twice (after a
peer outage or a station crash) carries the same ``id`` both times. Numbers that were not measured
(the score of a part that was not inspected) are ``null``, never ``NaN``.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from flawscope.types import InspectionRecord, Outcome

SCHEMA_VERSION = 1
SCHEMA_ID = "https://flawscope.dev/schemas/result-v1.schema.json"
#: Numeric outcome codes for PLCs (tag handshake, OPC UA): 0 is "no result".
OUTCOME_CODES = {
    Outcome.PASS: 1,
    Outcome.REVIEW: 2,
    Outcome.FAIL: 3,
    Outcome.ERROR: 4,
    Outcome.NOT_INSPECTED: 5,
}


def schema_path() -> Path:
    """The JSON Schema file of the result message."""
    return Path(str(resources.files("flawscope.integrate") / "schemas" / "result-v1.schema.json"))


def result_id(record: InspectionRecord) -> str:
    """The record's delivery id (idempotency key): ``<seq>-<first 16 hex of its hash>``.

    Stable across re-deliveries, unique across audit logs (the hash), ordered within one (the seq).
    """
    if record.seq is None or not record.record_hash:
        raise ValueError("only a committed record (with seq and record_hash) has a result id")
    return f"{record.seq}-{record.record_hash[:16]}"


def camera_of(record: InspectionRecord) -> str:
    """The camera part of a record's ``station`` (``press-3/top`` -> ``top``)."""
    return record.station.rsplit("/", 1)[-1]


def iso_time(seconds: float) -> str | None:
    """UTC ISO 8601 with milliseconds and a ``Z``; None when not a finite time."""
    if not math.isfinite(seconds):
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def place_of(station: Any) -> dict[str, str]:
    """The ISA-95 names of a station (``StationConfig.station``) that topics and messages carry."""
    return {
        "enterprise": station.enterprise,
        "site": station.site,
        "area": station.area,
        "line": station.line,
        "station": station.name,
    }


def web_of(record: InspectionRecord) -> dict[str, Any] | None:
    """Where on a line-scan web a record is (centre and extent), or None for a discrete part."""
    if not record.web_roll:
        return None
    return {
        "roll": record.web_roll,
        "along_m": _num(record.web_along_m),
        "across_mm": _num(record.web_across_mm),
        "length_mm": _num(record.web_length_mm),
        "width_mm": _num(record.web_width_mm),
    }


def to_message(record: InspectionRecord, place: dict[str, str]) -> dict[str, Any]:
    """The version-1 message of a committed record.

    Args:
        record: a committed record.
        place: ISA-95 names ``enterprise``, ``site``, ``area``, ``line``, ``station``.
    """
    return {
        "schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "id": result_id(record),
        "seq": record.seq,
        "kind": record.kind,
        **{k: place.get(k, "") for k in ("enterprise", "site", "area", "line", "station")},
        "camera": camera_of(record),
        "part_id": record.part_id,
        "acquired_at": iso_time(record.acquired_at),
        "outcome": record.outcome.value,
        "outcome_code": OUTCOME_CODES[Outcome(record.outcome)],
        "accept": Outcome(record.outcome).is_accept,
        "score": _num(record.score),
        "normalized_score": _num(record.normalized_score),
        "category": record.category,
        "regions": [
            {
                "bbox": list(r.bbox),
                "area_px": r.area_px,
                "peak": _num(r.peak),
                "centroid": [_num(c) for c in r.centroid],
                "area_mm2": _num(r.area_mm2),
                **({} if r.category is None else {"category": r.category}),
            }
            for r in record.regions
        ],
        "web": web_of(record),
        "model": {
            "hash": record.model_hash,
            "version": record.model_version,
            "threshold_version": record.threshold_version,
            "threshold_sha256": record.threshold_sha256,
            "graph_sha256": record.graph_sha256,
            "signer": record.signer,
            "allow_unsigned": record.allow_unsigned,
        },
        "latency_ms": _num(record.latency_ms),
        "image": {"sha256": record.image_sha256, "uri": record.image_uri},
        "source": record.source,
        "reason": record.reason,
        "ref_seq": record.ref_seq,
        "operator": record.operator,
        "record_hash": record.record_hash,
        "prev_hash": record.prev_hash,
    }


def dumps(message: Any) -> bytes:
    """Compact UTF-8 JSON (no NaN: the message builder already turned them into null)."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")

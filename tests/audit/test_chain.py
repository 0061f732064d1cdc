"""Canonical JSON, hashing and normalisation of audit records (no database)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from flawscope.audit.chain import (
    GENESIS_HASH,
    HASHED_FIELDS,
    canonical_json,
    compute_hash,
    decode_regions,
    encode_regions,
    link,
    normalize_record,
    record_to_row,
    row_to_record,
)
from flawscope.audit.verify import ChainHead, verify_rows
from flawscope.errors import InputError
from flawscope.types import Outcome, Region


def test_canonical_json_is_sorted_compact_and_writes_non_finite_as_strings(make_record):
    record = link(normalize_record(make_record(0, score=math.nan, latency_ms=math.inf)), 1, GENESIS_HASH)
    text = canonical_json(record).decode("ascii")
    doc = json.loads(text)
    assert list(doc) == sorted(doc) and " " not in text.replace("station-A", "")
    assert "record_hash" not in doc and doc["seq"] == 1 and doc["prev_hash"] == GENESIS_HASH
    assert doc["score"] == "NaN" and doc["latency_ms"] == "Infinity"
    assert doc["normalized_score"] == record.normalized_score
    assert f'"acquired_at":{record.acquired_at!r}' in text


def test_every_hashed_field_changes_the_hash(make_record):
    base = normalize_record(make_record(3, category="scratch", ref_seq=None))
    base_hash = compute_hash(link(base, 5, "a" * 64))
    changed = {
        "part_id": "other",
        "station": "B",
        "acquired_at": base.acquired_at + 1e-6,
        "outcome": Outcome.ERROR,
        "score": math.nextafter(base.score, 10),
        "normalized_score": math.nan,
        "regions": (),
        "category": None,
        "image_sha256": "f" * 64,
        "image_uri": "s3://x",
        "model_hash": "c" * 64,
        "model_version": "2",
        "threshold_version": 4,
        "latency_ms": 1.0,
        "source": "cam://1",
        "reason": "why",
        "kind": "override",
        "ref_seq": 1,
        "operator": "bob",
    }
    assert set(changed) | {"seq", "prev_hash"} == set(HASHED_FIELDS)
    for name, value in changed.items():
        other = link(dataclasses.replace(base, **{name: value}), 5, "a" * 64)
        assert compute_hash(other) != base_hash, name
    assert compute_hash(link(base, 6, "a" * 64)) != base_hash
    assert compute_hash(link(base, 5, "b" * 64)) != base_hash


def test_normalize_converts_numpy_and_negative_zero(make_record):
    record = normalize_record(
        make_record(0, score=np.float32(0.5), acquired_at=np.float64(-0.0), threshold_version=np.int32(7))
    )
    assert type(record.score) is float and record.score == 0.5
    assert math.copysign(1, record.acquired_at) == 1.0
    assert type(record.threshold_version) is int
    assert record.outcome is Outcome.FAIL
    assert normalize_record(make_record(1, outcome="review")).outcome is Outcome.REVIEW


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"score": "high"}, "score"),
        ({"score": True}, "score"),
        ({"threshold_version": 1.5}, "threshold_version"),
        ({"threshold_version": 2**64}, "64-bit"),
        ({"station": None}, "station"),
        ({"image_uri": "\ud800"}, "Unicode"),
        ({"outcome": "ok"}, "outcome"),
        ({"kind": "note"}, "kind"),
        ({"regions": ((1, 2, 3, 4),)}, "Region"),
    ],
)
def test_normalize_rejects_bad_fields(make_record, fields, match):
    with pytest.raises(InputError, match=match):
        normalize_record(make_record(0, **fields))


def test_regions_round_trip_through_json_text():
    regions = (
        Region(bbox=(0, 1, 2, 3), area_px=4, peak=math.nan, centroid=(0.5, 1 / 3), area_mm2=0.01),
        Region(bbox=(5, 5, 9, 9), area_px=16, peak=math.inf, centroid=(7.0, 7.0)),
    )
    back = decode_regions(encode_regions(regions))
    assert math.isnan(back[0].peak) and back[0].centroid == (0.5, 1 / 3) and back[0].area_mm2 == 0.01
    assert back[1] == regions[1]


def test_verify_rows_on_a_clean_and_a_broken_chain(make_record):
    rows, prev = [], GENESIS_HASH
    for i in range(5):
        record = link(normalize_record(make_record(i)), i + 1, prev)
        prev = record.record_hash
        rows.append(record_to_row(record))
    assert row_to_record(rows[0]).record_hash == rows[0]["record_hash"]
    assert verify_rows(rows).ok
    assert verify_rows(rows, ChainHead(5, prev)).ok
    assert verify_rows([], ChainHead(0, GENESIS_HASH)).ok
    assert verify_rows(rows[1:]).first_bad_seq == 1
    assert verify_rows(rows, ChainHead(6, "x")).first_bad_seq == 6
    assert verify_rows([*rows[:2], {**rows[2], "outcome": "banana"}]).first_bad_seq == 3
    assert "cannot be read" in verify_rows([{**rows[0], "regions": "{"}]).problem

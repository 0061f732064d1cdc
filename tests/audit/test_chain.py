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
        "threshold_sha256": "1" * 64,
        "graph_sha256": "2" * 64,
        "signer": "0123456789abcdef",
        "allow_unsigned": True,
        "web_roll": "coil-7",
        "web_along_m": 12.5,
        "web_across_mm": 300.0,
        "web_length_mm": 4.0,
        "web_width_mm": 3.0,
        "category_confidence": 0.875,
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


def test_a_region_s_category_is_kept_and_records_without_one_hash_as_before(make_record):
    plain = Region(bbox=(0, 1, 2, 3), area_px=4, peak=0.9, centroid=(1.0, 2.0))
    named = dataclasses.replace(plain, category="crazing")
    assert decode_regions(encode_regions((named, plain))) == (named, plain)
    # no category: the canonical text is the one written before regions had categories
    assert encode_regions((plain,)) == (
        '[{"area_mm2":null,"area_px":4,"bbox":[0,1,2,3],"centroid":[1.0,2.0],"peak":0.9}]'
    )
    record = normalize_record(make_record(0, regions=(named,)))
    assert record.regions[0].category == "crazing"
    assert b'"category":"crazing"' in canonical_json(record)
    with pytest.raises(InputError, match="category"):
        normalize_record(make_record(0, regions=(dataclasses.replace(plain, category=3),)))


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


# ------------------------------------------------------------------ the declaration and hash scheme v2


def test_the_schema_is_derived_from_the_record_declaration():
    from flawscope.audit.fields import record_fields
    from flawscope.audit.schema import inspections
    from flawscope.types import InspectionRecord

    specs = {s.name: s for s in record_fields()}
    assert list(specs) == [f.name for f in dataclasses.fields(InspectionRecord)]
    assert [c.name for c in inspections.columns] == list(specs)
    assert {n for n, s in specs.items() if not s.hashed} == {"record_hash"}
    assert specs["allow_unsigned"].kind == "bool" and specs["allow_unsigned"].since == 2
    assert specs["category"].nullable and not specs["part_id"].nullable and specs["score"].nullable
    for name, spec in specs.items():
        assert inspections.c[name].nullable == spec.nullable or name == "seq"


def test_a_field_without_a_column_rule_is_an_error_not_a_skipped_column():
    from flawscope.audit.fields import _kind

    with pytest.raises(TypeError, match=r"InspectionRecord\.extra: .* no audit column rule"):
        _kind("extra", dict[str, int])
    with pytest.raises(TypeError, match="no audit column rule"):
        _kind("extra", int | str)


def test_later_fields_at_their_default_leave_the_hash_as_schema_1_made_it(make_record):
    # Hashes computed by flawscope before schema 2 (commit 9fd562a) for these exact records.
    first = make_record(0, part_id="p-1", station="st", acquired_at=1700000000.25, score=3.5,
                        normalized_score=1.4, regions=(Region((1, 2, 30, 40), 17, 0.93, (12.5, 20.25)),),
                        image_sha256="a" * 64, model_hash="b" * 64, model_version="bbbbbbbbbbbb.t2",
                        threshold_version=2, latency_ms=12.5, source="folder:///x", reason="score 3.5 >= 2.5",
                        outcome=Outcome.FAIL)  # fmt: skip
    linked = link(normalize_record(first), 1, GENESIS_HASH)
    assert linked.record_hash == "a3193b18ca3fd9ca3df2cc2de3dbcaf297576858e9a1c93c18b6e67a05b7aef8"
    assert b"graph_sha256" not in canonical_json(linked) and b"allow_unsigned" not in canonical_json(linked)
    # A value other than the default enters the hash; setting it back to the default changes it again.
    signed = link(dataclasses.replace(linked, graph_sha256="2" * 64), 1, GENESIS_HASH)
    assert signed.record_hash != linked.record_hash
    assert compute_hash(dataclasses.replace(signed, graph_sha256="")) != signed.record_hash
    flagged = link(dataclasses.replace(linked, allow_unsigned=True), 1, GENESIS_HASH)
    assert b'"allow_unsigned":true' in canonical_json(flagged)


def test_a_row_missing_a_column_is_an_error_unless_the_store_predates_it(make_record):
    row = record_to_row(link(normalize_record(make_record(1)), 1, GENESIS_HASH))
    del row["signer"]
    with pytest.raises(ValueError, match="no signer column"):
        row_to_record(row)
    assert row_to_record(row, schema_version=1).signer == ""
    del row["operator"]
    with pytest.raises(ValueError, match="no operator column"):
        row_to_record(row, schema_version=1)


def test_a_boolean_must_be_a_boolean(make_record):
    with pytest.raises(InputError, match=r"allow_unsigned .*true or false"):
        normalize_record(make_record(1, allow_unsigned=1))
    assert normalize_record(make_record(1, allow_unsigned=np.bool_(True))).allow_unsigned is True
    row = record_to_row(link(normalize_record(make_record(1)), 1, GENESIS_HASH))
    with pytest.raises(ValueError, match="not a boolean"):
        row_to_record({**row, "allow_unsigned": 2})
    assert row_to_record({**row, "allow_unsigned": 1}).allow_unsigned is True


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"kind": "gossip"}, "is not one of inspection, override, review, drift, web_defect, model"),
        ({"kind": "override", "ref_seq": 1, "reason": "x"}, "needs a non-empty operator"),
        ({"kind": "override", "operator": "ann", "reason": "x"}, "must name the record it is about"),
        ({"kind": "inspection", "ref_seq": 1}, "is about no other record"),
        ({"kind": "review", "ref_seq": 1, "operator": "ann", "outcome": "error"}, "review record is one of"),
        ({"kind": "model", "reason": " "}, "needs a non-empty reason"),
        ({"kind": "drift", "reason": "alarm: x"}, "needs a non-empty category"),
    ],
)
def test_each_kind_s_rules_are_enforced(make_record, fields, problem):
    with pytest.raises(InputError, match=problem):
        normalize_record(make_record(1, **fields))


def test_the_result_message_carries_a_region_s_category_within_its_schema(make_record):
    jsonschema = pytest.importorskip("jsonschema")
    from flawscope.integrate.payload import schema_path, to_message

    plain = Region(bbox=(0, 1, 2, 3), area_px=4, peak=0.9, centroid=(1.0, 2.0))
    named = dataclasses.replace(plain, bbox=(4, 4, 9, 9), category="crazing")
    record = link(normalize_record(make_record(0, regions=(named, plain))), 1, GENESIS_HASH)
    message = to_message(record, {"line": "l", "station": "s"})
    jsonschema.validate(message, json.loads(schema_path().read_text()))
    assert message["regions"][0]["category"] == "crazing"
    assert "category" not in message["regions"][1]

"""Streaming export of the audit log to CSV and Parquet."""

from __future__ import annotations

import csv
import json
import math
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flawscope.audit import AuditLog, compute_hash
from flawscope.audit.chain import FIELDS, row_to_record
from flawscope.audit.export import epoch_seconds, export_records, iso_time
from flawscope.errors import InputError
from flawscope.types import Outcome


@pytest.fixture
def log(tmp_path, make_record):
    with AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}") as log:
        log.append_many([make_record(i) for i in range(9)])
        log.append(make_record(9, score=math.nan, threshold_version=None, category="scratch"))
        log.append_override(1, Outcome.PASS, operator="alice", reason="dust")
        yield log


def test_csv_has_a_column_per_field_and_regions_as_json(log, tmp_path):
    path = tmp_path / "audit.csv"
    assert log.export(path) == 11
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == FIELDS
    assert [int(r["seq"]) for r in rows] == list(range(1, 12))
    stored = list(log.records())
    assert rows[0]["outcome"] == "fail" and float(rows[0]["score"]) == stored[0].score
    regions = json.loads(rows[0]["regions"])
    assert regions[0]["bbox"] == list(stored[0].regions[0].bbox)
    assert rows[9]["score"] == "" and rows[9]["threshold_version"] == "" and rows[9]["category"] == "scratch"
    assert rows[10]["kind"] == "override" and rows[10]["ref_seq"] == "1" and rows[10]["operator"] == "alice"
    assert rows[10]["record_hash"] == stored[10].record_hash
    # Times are ISO 8601 with their time zone, not epoch floats, and give back the stored value.
    assert rows[1]["acquired_at"] == "2023-11-14T22:13:20.125+00:00"
    for row, record in zip(rows, stored, strict=True):
        assert datetime.fromisoformat(row["acquired_at"]).tzinfo is not None
        assert epoch_seconds(row["acquired_at"]) == record.acquired_at


def test_csv_since_exports_only_newer_records(log, tmp_path):
    path = tmp_path / "new.csv"
    assert log.export(path, since=8) == 3
    with path.open(newline="") as fh:
        assert [int(r["seq"]) for r in csv.DictReader(fh)] == [9, 10, 11]


def test_parquet_in_row_groups_keeps_types_and_hashes(log, tmp_path):
    path = tmp_path / "audit.parquet"
    n = export_records(log.records(), path, "parquet", row_group=4)
    assert n == 11
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 3 and meta.num_rows == 11
    table = pq.read_table(path)
    assert tuple(table.column_names) == FIELDS
    assert table.schema.field("acquired_at").type == pa.timestamp("ns", tz="UTC")
    # Read as nanoseconds (datetime objects hold microseconds only); epoch_seconds gives the float.
    nanoseconds = table.column("acquired_at").cast(pa.int64()).to_pylist()
    table = table.set_column(FIELDS.index("acquired_at"), "acquired_at", pa.array(nanoseconds))
    rows = [{**row, "acquired_at": epoch_seconds(row["acquired_at"])} for row in table.to_pylist()]
    assert math.isnan(rows[9]["score"]) and rows[9]["threshold_version"] is None
    assert rows[0]["threshold_version"] == 3 and rows[10]["ref_seq"] == 1
    # The export carries everything needed to re-check each record's hash outside the database.
    for row, stored in zip(rows, log.records(), strict=True):
        record = row_to_record(row)
        assert compute_hash(record) == record.record_hash == stored.record_hash


def test_export_errors_leave_no_partial_file(log, tmp_path):
    with pytest.raises(InputError, match="format"):
        log.export(tmp_path / "audit.xlsx", format="xlsx")
    with pytest.raises(InputError, match="does not exist"):
        log.export(tmp_path / "missing" / "audit.csv")

    def failing():
        yield from log.records(limit=3)
        raise RuntimeError("database went away")

    with pytest.raises(RuntimeError):
        export_records(failing(), tmp_path / "audit.csv")
    assert list(tmp_path.glob("*.csv")) == [] and list(tmp_path.glob(".*partial")) == []


@pytest.mark.parametrize(
    "seconds", [0.0, 0.5, 1_700_000_000.125, 1_731_234_567.1234567, 1_764_000_000.4975898]
)
def test_exported_times_give_back_the_exact_stored_float(seconds):
    text = iso_time(seconds)
    assert text.endswith("+00:00")
    assert datetime.fromisoformat(text).tzinfo == UTC
    assert epoch_seconds(text) == seconds
    assert epoch_seconds(text.replace("+00:00", "Z")) == seconds

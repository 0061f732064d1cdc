"""A store written by flawscope before schema 2 opens, migrates and still verifies (SQLite and PostgreSQL).

The old store is made here exactly as that flawscope made it: its DDL (printed by its SQLAlchemy
for each dialect) and three records whose hashes that flawscope computed (commit 9fd562a).
"""

from __future__ import annotations

import sqlalchemy as sa

from flawscope.audit import AuditLog, ChainHead
from flawscope.audit.migrations import SCHEMA_VERSION
from flawscope.types import Outcome

_COLUMNS_V1 = """
    part_id TEXT NOT NULL, station TEXT NOT NULL, acquired_at {double}, outcome TEXT NOT NULL,
    score {double}, normalized_score {double}, regions TEXT NOT NULL, category TEXT,
    image_sha256 TEXT NOT NULL, image_uri TEXT NOT NULL, model_hash TEXT NOT NULL,
    model_version TEXT NOT NULL, threshold_version BIGINT, latency_ms {double}, source TEXT NOT NULL,
    reason TEXT NOT NULL, kind TEXT NOT NULL, ref_seq BIGINT, operator TEXT NOT NULL,
    prev_hash TEXT NOT NULL, record_hash TEXT NOT NULL, PRIMARY KEY (seq)
"""
DDL_V1 = {
    "sqlite": [
        "CREATE TABLE inspections (seq INTEGER NOT NULL, " + _COLUMNS_V1.format(double="DOUBLE") + ")",
        "CREATE INDEX ix_inspections_part_seq ON inspections (part_id, seq)",
        'CREATE TABLE meta ("key" VARCHAR(64) NOT NULL, value TEXT NOT NULL, PRIMARY KEY ("key"))',
    ],
    "postgresql": [
        "CREATE TABLE inspections (seq BIGINT NOT NULL, "
        + _COLUMNS_V1.format(double="DOUBLE PRECISION")
        + ")",
        "CREATE INDEX ix_inspections_part_seq ON inspections (part_id, seq)",
        "CREATE TABLE meta (key VARCHAR(64) NOT NULL, value TEXT NOT NULL, PRIMARY KEY (key))",
    ],
}
GENESIS = "0" * 64
H1 = "a3193b18ca3fd9ca3df2cc2de3dbcaf297576858e9a1c93c18b6e67a05b7aef8"
H2 = "5dbf99a03ef51e0801f1f8ad4216a7f0a85a442cf5eed893978c46a5aa66aa1c"
H3 = "64d01249125aea3576a37ce6ef45a792cfbb125747899409e034364f49a25e95"
_COMMON = {"station": "st", "image_uri": "", "category": None, "operator": "", "source": "folder:///x"}
ROWS_V1 = [
    {**_COMMON, "seq": 1, "part_id": "p-1", "acquired_at": 1700000000.25, "outcome": "fail", "score": 3.5,
     "normalized_score": 1.4,
     "regions": '[{"area_mm2":null,"area_px":17,"bbox":[1,2,30,40],"centroid":[12.5,20.25],"peak":0.93}]',
     "image_sha256": "a" * 64, "model_hash": "b" * 64, "model_version": "bbbbbbbbbbbb.t2",
     "threshold_version": 2, "latency_ms": 12.5, "reason": "score 3.5 >= 2.5", "kind": "inspection",
     "ref_seq": None, "prev_hash": GENESIS, "record_hash": H1},
    {**_COMMON, "seq": 2, "part_id": "p-2", "acquired_at": 1700000001.5, "outcome": "error", "score": None,
     "normalized_score": None, "regions": "[]", "image_sha256": "", "model_hash": "b" * 64,
     "model_version": "bbbbbbbbbbbb.t2", "threshold_version": 2, "latency_ms": None, "reason": "no image",
     "kind": "inspection", "ref_seq": None, "prev_hash": H1, "record_hash": H2},
    {**_COMMON, "seq": 3, "part_id": "p-1", "acquired_at": 1700000100.0, "outcome": "pass", "score": None,
     "normalized_score": None, "regions": "[]", "image_sha256": "a" * 64, "model_hash": "",
     "model_version": "", "threshold_version": None, "latency_ms": None, "reason": "false call",
     "kind": "override", "ref_seq": 1, "operator": "ann", "prev_hash": H2, "record_hash": H3},
]  # fmt: skip
META_V1 = [
    ("schema_version", "1"),
    ("genesis_hash", GENESIS),
    ("hash_scheme", "sha256-canonical-json-v1"),
    ("created_at", "2025-01-01T00:00:00+00:00"),
]


def _old_store(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for ddl in DDL_V1[conn.dialect.name]:
            conn.exec_driver_sql(ddl)
        meta = [{"k": k, "v": v} for k, v in META_V1]
        conn.execute(sa.text("INSERT INTO meta (key, value) VALUES (:k, :v)"), meta)
        columns = ", ".join(ROWS_V1[0])
        values = ", ".join(f":{c}" for c in ROWS_V1[0])
        conn.execute(sa.text(f"INSERT INTO inspections ({columns}) VALUES ({values})"), ROWS_V1)
    engine.dispose()


def _layout(url: str) -> tuple[set[str], set[str], set[str]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        columns = {c["name"] for c in inspector.get_columns("inspections")}
        indexes = {i["name"] for i in inspector.get_indexes("inspections")}
        tables = set(inspector.get_table_names())  # the sink tables of schema 4 included
    engine.dispose()
    return columns, indexes, tables


def test_an_old_store_is_read_as_it_is_when_opened_read_only(audit_url, run_sql):
    _old_store(audit_url)
    with AuditLog.open(audit_url, read_only=True) as log:
        result = log.verify(expected_head=ChainHead(3, H3))
        records = list(log.records())
    assert result.ok and result.n_records == 3
    assert [r.record_hash for r in records] == [H1, H2, H3]
    assert records[0].graph_sha256 == "" and records[0].allow_unsigned is False  # later fields: defaults
    assert dict(run_sql(audit_url, "SELECT key, value FROM meta"))["schema_version"] == "1"  # untouched


def test_an_old_store_is_migrated_when_opened_for_writing_and_its_chain_still_verifies(
    audit_url, run_sql, make_record, tmp_path, request
):
    _old_store(audit_url)
    with AuditLog.open(audit_url) as log:
        assert log.verify(expected_head=ChainHead(3, H3)).ok
        new = log.append(
            make_record(4, threshold_sha256="1" * 64, graph_sha256="2" * 64, signer="0123456789abcdef")
        )
        review = log.append_review(1, Outcome.FAIL, operator="bob", category="scratch")
        assert (new.seq, new.prev_hash, review.seq) == (4, H3, 5)
        result = log.verify(expected_head=ChainHead(review.seq, review.record_hash))
        assert result.ok and result.n_records == 5
        assert [r.record_hash for r in log.records(limit=3)] == [H1, H2, H3]  # old hashes unchanged
        assert log.get(4).graph_sha256 == "2" * 64
    meta = dict(run_sql(audit_url, "SELECT key, value FROM meta"))
    assert meta["schema_version"] == str(SCHEMA_VERSION)
    assert meta["hash_scheme"] == "sha256-canonical-json-v2"

    # The migrated store has the columns and indexes of a store made new by this flawscope.
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    if audit_url.startswith("postgresql"):
        fresh = request.getfixturevalue("fresh_pg_url")
    AuditLog.open(fresh).close()
    assert _layout(audit_url) == _layout(fresh)
    assert {"ix_inspections_time", "ix_inspections_outcome_time", "ix_inspections_station_time"} <= _layout(
        audit_url
    )[1]


def test_an_edit_of_an_old_record_is_still_found_after_the_migration(audit_url, run_sql):
    _old_store(audit_url)
    run_sql(audit_url, "UPDATE inspections SET outcome = 'pass' WHERE seq = 1")
    with AuditLog.open(audit_url) as log:
        result = log.verify()
    assert not result.ok and result.first_bad_seq == 1 and "altered" in result.problem


def test_a_record_written_after_the_migration_is_protected_in_its_new_fields(audit_url, run_sql, make_record):
    _old_store(audit_url)
    with AuditLog.open(audit_url) as log:
        log.append(make_record(4, allow_unsigned=True, threshold_sha256="1" * 64))
    # Clearing the development flag or swapping the thresholds' hash behind the log's back is an edit.
    for statement in (
        "UPDATE inspections SET allow_unsigned = false WHERE seq = 4",
        "UPDATE inspections SET allow_unsigned = true, threshold_sha256 = '' WHERE seq = 4",
    ):
        run_sql(audit_url, statement)
        with AuditLog.open(audit_url, read_only=True) as log:
            result = log.verify()
        assert not result.ok and result.first_bad_seq == 4


def test_web_coordinates_added_by_schema_6_are_protected_and_old_records_keep_their_hashes(
    audit_url, run_sql, make_record
):
    _old_store(audit_url)
    with AuditLog.open(audit_url) as log:
        assert [r.web_roll for r in log.records()] == ["", "", ""]  # the migration's defaults
        log.append(make_record(4, web_roll="coil-3", web_along_m=12.25, web_across_mm=310.0))
        assert log.verify(expected_head=log.head()).ok
        assert log.get(4).web_along_m == 12.25 and log.get(1).web_along_m == 0.0
    run_sql(audit_url, "UPDATE inspections SET web_along_m = 13.0 WHERE seq = 4")
    with AuditLog.open(audit_url, read_only=True) as log:
        result = log.verify()
    assert not result.ok and result.first_bad_seq == 4

"""Behaviour of the audit log on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import itertools
import math
import struct
import threading

import numpy as np
import pytest

from flawscope.audit import GENESIS_HASH, AuditLog, AuditWriteError, ChainHead, compute_hash
from flawscope.audit.migrations import SCHEMA_VERSION
from flawscope.errors import InputError
from flawscope.types import InspectionRecord, Outcome, Region


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def test_append_assigns_gapless_seq_and_chains_hashes(audit_url, make_record):
    with AuditLog.open(audit_url) as log:
        assert log.head() == ChainHead(0, GENESIS_HASH)
        first = log.append(make_record(0))
        batch = log.append_many([make_record(i) for i in range(1, 9)])
        assert [first.seq, *(r.seq for r in batch)] == list(range(1, 10))
        assert first.prev_hash == GENESIS_HASH
        chain = [first, *batch]
        for before, after in itertools.pairwise(chain):
            assert after.prev_hash == before.record_hash
        assert all(r.record_hash == compute_hash(r) for r in chain)
        assert log.head() == ChainHead(9, batch[-1].record_hash)
        assert log.count() == 9
        # What the database gives back hashes to what append computed.
        stored = list(log.records())
        assert [r.record_hash for r in stored] == [r.record_hash for r in chain]
        assert all(compute_hash(r) == r.record_hash for r in stored)
        assert stored[0].regions == first.regions and stored[0].outcome is Outcome.FAIL
        result = log.verify()
        assert result.ok and result.n_records == 9 and result.first_bad_seq is None


def test_log_persists_across_reopen(audit_url, make_record):
    with AuditLog.open(audit_url) as log:
        log.append_many([make_record(i) for i in range(5)])
    with AuditLog.open(audit_url) as log:
        assert log.count() == 5
        assert log.append(make_record(5)).seq == 6
        assert log.verify().ok


def test_meta_table_holds_schema_version_and_genesis(audit_url, run_sql):
    AuditLog.open(audit_url).close()
    meta = dict(run_sql(audit_url, "SELECT key, value FROM meta"))
    assert meta["schema_version"] == str(SCHEMA_VERSION) == "7"
    assert meta["hash_scheme"] == "sha256-canonical-json-v2"
    assert meta["genesis_hash"] == GENESIS_HASH


def test_floats_and_text_round_trip_exactly(audit_url):
    rng = np.random.default_rng(7)
    raw = rng.integers(0, 2**64, size=300, dtype=np.uint64).view(np.float64)
    specials = [5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1, 1 / 3, -0.0]
    values = [float(v) for v in raw if math.isfinite(v)][:200] + specials + [math.inf, -math.inf, math.nan]
    records = [
        InspectionRecord(
            part_id=f"pièce-{i}-🔩-\t'\"",
            station="Linie Ä",
            acquired_at=v if math.isfinite(v) else 0.0,
            outcome=Outcome.REVIEW,
            score=v,
            normalized_score=np.float32(v) if math.isfinite(v) and abs(v) < 1e38 else v,
            regions=(Region(bbox=(0, 0, 1, 1), area_px=1, peak=v, centroid=(v, -v), area_mm2=v),),
        )
        for i, v in enumerate(values)
    ]
    with AuditLog.open(audit_url) as log:
        written = log.append_many(records)
        back = list(log.records())
    assert len(back) == len(values)
    for w, b, v in zip(written, back, values, strict=True):
        assert b.record_hash == w.record_hash == compute_hash(b)
        assert b.part_id == w.part_id and b.station == "Linie Ä"
        if math.isnan(v):
            assert math.isnan(b.score) and math.isnan(b.regions[0].peak)
        else:
            # -0.0 is stored as 0.0 by SQLite, so the log records 0.0 on every backend.
            assert bits(b.score) == bits(w.score) == bits(v + 0.0)
            assert bits(b.regions[0].centroid[1]) == bits(-v + 0.0)
            assert bits(b.normalized_score) == bits(w.normalized_score)


def test_numpy_scalars_are_stored_as_plain_values(audit_url, make_record):
    with AuditLog.open(audit_url) as log:
        rec = log.append(make_record(1, score=np.float32(0.25), threshold_version=np.int64(4)))
        assert type(rec.score) is float and type(rec.threshold_version) is int
        assert log.get(rec.seq) == rec


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("score", 0.5),
        ("outcome", "pass"),
        ("part_id", "someone-else"),
        ("regions", "[]"),
        ("model_hash", "0" * 64),
        ("threshold_version", 2),
        ("outcome", "banana"),
        ("score", None),
    ],
)
def test_verify_names_the_row_altered_with_sql(audit_url, make_record, run_sql, column, value):
    with AuditLog.open(audit_url) as log:
        log.append_many([make_record(i, outcome=Outcome.FAIL) for i in range(12)])
        run_sql(audit_url, f"UPDATE inspections SET {column} = :v WHERE seq = 7", v=value)
        result = log.verify()
        if value == "banana":
            with pytest.raises(InputError, match="record 7 cannot be read"):
                list(log.records())
    assert not result.ok
    assert result.first_bad_seq == 7
    assert result.n_records == 6
    assert "record 7" in result.problem
    assert ("cannot be read" if value == "banana" else "altered") in result.problem


def test_verify_names_a_row_rewritten_with_a_recomputed_hash(audit_url, make_record, run_sql):
    with AuditLog.open(audit_url) as log:
        log.append_many([make_record(i) for i in range(6)])
        forged = log.get(3)
        assert forged is not None
        forged = InspectionRecord(**{**forged.__dict__, "score": 0.0, "record_hash": ""})
        new_hash = compute_hash(forged)
        run_sql(audit_url, "UPDATE inspections SET score = 0.0, record_hash = :h WHERE seq = 3", h=new_hash)
        result = log.verify()
    # Record 3 is consistent with itself now; record 4 no longer links to it.
    assert not result.ok and result.first_bad_seq == 4 and "link" in result.problem


def test_verify_names_a_deleted_middle_row(audit_url, make_record, run_sql):
    with AuditLog.open(audit_url) as log:
        log.append_many([make_record(i) for i in range(10)])
        run_sql(audit_url, "DELETE FROM inspections WHERE seq = 5")
        result = log.verify()
    assert not result.ok and result.first_bad_seq == 5
    assert "missing" in result.problem and "4 to 6" in result.problem


def test_verify_names_a_row_inserted_by_renumbering(audit_url, make_record, run_sql):
    with AuditLog.open(audit_url) as log:
        log.append_many([make_record(i) for i in range(8)])
        run_sql(audit_url, "UPDATE inspections SET seq = seq + 100 WHERE seq >= 5")
        run_sql(audit_url, "UPDATE inspections SET seq = seq - 99 WHERE seq >= 105")
        row = log.get(2)
        assert row is not None
        columns = "part_id, station, acquired_at, outcome, score, normalized_score, regions, category, "
        columns += "image_sha256, image_uri, model_hash, model_version, threshold_version, latency_ms, "
        columns += "source, reason, kind, ref_seq, operator, prev_hash, record_hash"
        run_sql(
            audit_url,
            f"INSERT INTO inspections (seq, {columns}) SELECT 5, {columns} FROM inspections WHERE seq=2",
        )
        result = log.verify()
    assert not result.ok and result.first_bad_seq == 5


def test_truncated_tail_needs_a_published_head(audit_url, make_record, run_sql):
    with AuditLog.open(audit_url) as log:
        log.append_many([make_record(i) for i in range(10)])
        published = log.head()
        assert published.seq == 10
        assert log.verify(expected_head=published).ok
        run_sql(audit_url, "DELETE FROM inspections WHERE seq > 7")
        # The chain alone cannot tell: a truncated chain is a valid chain.
        assert log.verify().ok
        result = log.verify(expected_head=published)
        assert not result.ok and result.first_bad_seq == 8 and "removed" in result.problem
        # Appending after the truncation does not hide it: record 10 is not the published one.
        log.append_many([make_record(i) for i in range(3)])
        result = log.verify(expected_head=tuple(published))  # type: ignore[arg-type]
        assert not result.ok and result.first_bad_seq == 10


def test_head_published_earlier_still_verifies_after_more_appends(audit_url, make_record):
    with AuditLog.open(audit_url) as log:
        log.append_many([make_record(i) for i in range(4)])
        published = log.head()
        log.append_many([make_record(i) for i in range(4, 9)])
        assert log.verify(expected_head=published).ok
        assert not log.verify(expected_head=ChainHead(published.seq, "f" * 64)).ok


def test_verify_streams_page_by_page(audit_url, make_record, run_sql, monkeypatch):
    import flawscope.audit.queries as queries

    monkeypatch.setattr(queries, "_PAGE", 7)
    with AuditLog.open(audit_url) as log:
        log.append_many([make_record(i) for i in range(50)])
        assert log.verify().n_records == 50
        assert [r.seq for r in log.records(since_seq=40)] == list(range(41, 51))
        run_sql(audit_url, "UPDATE inspections SET score = 9.0 WHERE seq = 36")
        assert log.verify().first_bad_seq == 36


def test_overrides_are_new_records_and_decide_latest_outcome(audit_url, make_record):
    with AuditLog.open(audit_url) as log:
        failed = log.append(make_record(1, part_id="P-1", outcome=Outcome.FAIL))
        log.append(make_record(2, part_id="P-2", outcome=Outcome.PASS))
        assert log.latest_outcome("P-1") is Outcome.FAIL
        override = log.append_override(failed.seq, "pass", operator="alice", reason="dust on lens")
        assert override.kind == "override" and override.ref_seq == failed.seq
        assert override.operator == "alice" and override.part_id == "P-1"
        assert override.outcome is Outcome.PASS and override.seq == 3
        assert log.latest_outcome("P-1") is Outcome.PASS
        # The original record is untouched: the override is added, nothing is updated.
        assert log.get(failed.seq) == failed
        # A later override of the same inspection wins; a re-inspection supersedes both.
        log.append_override(failed.seq, Outcome.REVIEW, operator="bob", reason="second look")
        assert log.latest_outcome("P-1") is Outcome.REVIEW
        log.append(make_record(3, part_id="P-1", outcome=Outcome.FAIL))
        assert log.latest_outcome("P-1") is Outcome.FAIL
        assert log.latest_outcome("never-seen") is None
        assert [r.kind for r in log.records(part_id="P-1")] == [
            "inspection",
            "override",
            "override",
            "inspection",
        ]
        assert log.verify().ok


def test_override_checks_its_reference_and_fields(audit_url, make_record):
    with AuditLog.open(audit_url) as log:
        rec = log.append(make_record(1))
        with pytest.raises(InputError, match="no record 99"):
            log.append_override(99, "pass", operator="alice", reason="x")
        with pytest.raises(InputError, match="operator"):
            log.append_override(rec.seq, "pass", operator=" ", reason="x")
        with pytest.raises(InputError, match="outcome"):
            log.append_override(rec.seq, "maybe", operator="alice", reason="x")
        override = log.append_override(rec.seq, "pass", operator="alice", reason="x")
        with pytest.raises(InputError, match="is of kind 'override'"):
            log.append_override(override.seq, "fail", operator="alice", reason="x")
        assert log.count() == 2 and log.verify().ok


def test_append_rejects_bad_records_and_writes_nothing(audit_url, make_record):
    with AuditLog.open(audit_url) as log:
        with pytest.raises(InputError, match="outcome"):
            log.append_many([make_record(1), make_record(2, outcome="great")])
        with pytest.raises(InputError, match="part_id"):
            log.append(make_record(1, part_id=42))
        with pytest.raises(InputError, match="NUL"):
            log.append(make_record(1, reason="bad\x00byte"))
        with pytest.raises(InputError, match="non-empty operator"):
            log.append(make_record(1, kind="override", ref_seq=1))
        with pytest.raises(InputError, match="no record 1 "):
            log.append(make_record(1, kind="override", ref_seq=1, operator="ann", reason="x"))
        with pytest.raises(InputError, match="must name the record it is about"):
            log.append(make_record(1, kind="review", operator="ann"))
        assert log.count() == 0
        assert log.append_many([]) == []


def test_queries(audit_url, make_record):
    with AuditLog.open(audit_url) as log:
        log.append_many([make_record(i, part_id=f"P-{i % 4}") for i in range(20)])
        log.append_override(1, "pass", operator="op", reason="checked")
        assert log.count() == 21
        assert [r.seq for r in log.records(limit=3)] == [1, 2, 3]
        assert [r.seq for r in log.records(since_seq=18)] == [19, 20, 21]
        assert [r.seq for r in log.records(part_id="P-1", limit=2)] == [2, 6]
        assert [r.seq for r in log.records(part_id="P-0", since_seq=9)] == [13, 17, 21]
        counts = log.counts_by_outcome()
        assert counts[Outcome.FAIL] == 7 and counts[Outcome.PASS] == 13 and counts[Outcome.ERROR] == 0
        assert log.counts_by_outcome(kind=None)[Outcome.PASS] == 14
        assert log.counts_by_outcome(kind="override") == {o: int(o is Outcome.PASS) for o in Outcome}


def test_concurrent_appends_from_threads(audit_url, make_record):
    n_threads, per_thread = 4, 15
    errors: list[BaseException] = []
    with AuditLog.open(audit_url) as log:

        def work(t: int) -> None:
            try:
                for i in range(per_thread):
                    if i % 2:
                        log.append(make_record(i, part_id=f"T{t}-{i}"))
                    else:
                        log.append_many([make_record(i, part_id=f"T{t}-{i}-{j}") for j in range(3)])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        expected = n_threads * (per_thread // 2 + 3 * (per_thread - per_thread // 2))
        assert log.count() == expected
        assert log.verify().ok and log.head().seq == expected


def test_failed_write_raises_audit_write_error_and_leaves_log_intact(audit_url, make_record, run_sql):
    with AuditLog.open(audit_url) as log:
        log.append_many([make_record(i) for i in range(3)])
        if audit_url.startswith("sqlite"):
            trigger = (
                "CREATE TRIGGER refuse BEFORE INSERT ON inspections "
                "BEGIN SELECT RAISE(ABORT, 'disk is full (simulated)'); END"
            )
            run_sql(audit_url, trigger)
        else:
            run_sql(
                audit_url,
                "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'disk is full (simulated)'; END $$ LANGUAGE plpgsql",
            )
            run_sql(
                audit_url,
                "CREATE TRIGGER refuse BEFORE INSERT ON inspections FOR EACH ROW EXECUTE FUNCTION refuse()",
            )
        with pytest.raises(AuditWriteError, match="disk is full"):
            log.append_many([make_record(i) for i in range(3, 8)])
        assert log.count() == 3 and log.head().seq == 3
        run_sql(
            audit_url, "DROP TRIGGER refuse" + ("" if audit_url.startswith("sqlite") else " ON inspections")
        )
        assert log.append(make_record(9)).seq == 4
        assert log.verify().ok


def test_writer_locked_out_by_another_writer_raises_audit_write_error(audit_url, make_record):
    import sqlite3

    import sqlalchemy as sa

    with AuditLog.open(audit_url, busy_timeout_s=0.3) as log:
        log.append(make_record(0))
        if audit_url.startswith("sqlite"):
            holder = sqlite3.connect(audit_url.removeprefix("sqlite:///"), isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            release = holder.close
        else:
            engine = sa.create_engine(audit_url)
            conn = engine.connect()
            conn.exec_driver_sql("LOCK TABLE inspections IN EXCLUSIVE MODE")

            def release() -> None:
                conn.close()
                engine.dispose()

        try:
            with pytest.raises(AuditWriteError, match=r"locked|lock timeout"):
                log.append(make_record(1))
        finally:
            release()
        assert log.append(make_record(1)).seq == 2
        assert log.verify().ok


def test_postgres_turned_read_only_raises_audit_write_error(pg_url, fresh_pg_url, make_record, run_sql):
    url = fresh_pg_url
    name = url.rsplit("/", 1)[1]
    with AuditLog.open(url) as log:
        log.append(make_record(0))
        run_sql(pg_url, f"ALTER DATABASE {name} SET default_transaction_read_only = on")
        run_sql(pg_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n", n=name)
        with pytest.raises(AuditWriteError, match="read-only"):
            log.append(make_record(1))
        assert log.count() == 1
        with pytest.raises(InputError, match="cannot open"):
            AuditLog.open(url)
        with AuditLog.open(url, read_only=True) as reader:
            assert reader.verify().ok


def test_reviews_and_model_events_are_kinds_of_record(audit_url, make_record):
    with AuditLog.open(audit_url) as log:
        inspected = log.append(make_record(1))
        review = log.append_review(inspected.seq, "fail", operator="ann", category="scratch")
        assert (review.kind, review.ref_seq, review.part_id) == ("review", inspected.seq, inspected.part_id)
        assert review.model_hash == "" and review.category == "scratch"
        with pytest.raises(InputError, match="is of kind 'review'; a review can only be about: inspection"):
            log.append_review(review.seq, "pass", operator="ann")
        with pytest.raises(InputError, match="review record is one of pass, fail, review"):
            log.append_review(inspected.seq, "error", operator="ann")
        # A record and a review of it in one batch; a model-registry event needs no part.
        batch = log.append_many(
            [
                make_record(2),
                make_record(2, kind="review", ref_seq=inspected.seq + 2, operator="bob", outcome="pass"),
                make_record(0, part_id="", kind="model", reason="promoted", operator="eve", outcome="pass"),
            ]
        )
        assert [r.kind for r in batch] == ["inspection", "review", "model"]
        with pytest.raises(InputError, match="no record 99"):
            log.append(make_record(3, kind="review", ref_seq=99, operator="bob", outcome="pass"))
        assert log.count() == 5 and log.verify().ok
        assert log.latest_outcome(inspected.part_id) == inspected.outcome  # a review is not an override

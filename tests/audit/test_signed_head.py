"""A signed, exported chain head catches what the chain alone cannot: truncation and recomputation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from flawscope.audit import AuditLog
from flawscope.audit.chain import link, record_to_row, row_to_record
from flawscope.audit.head import read_signed_head, signed_head, write_signed_head
from flawscope.errors import InputError
from flawscope.signing import KeyStore, TrustPolicy, public_pem
from flawscope.types import Outcome


@pytest.fixture
def log_with_head(audit_url, make_record, tmp_path):
    with AuditLog.open(audit_url) as log:
        log.append_many([make_record(i) for i in range(6)])
        head_file = write_signed_head(tmp_path / "head.json", signed_head(log.head(), log.url))
    return audit_url, head_file


def _recompute_chain_from(url: str, run_sql, seq: int) -> None:
    """Rewrite record ``seq`` and re-link every later record with correct hashes (database access)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        rows = conn.execute(sa.text("SELECT * FROM inspections ORDER BY seq")).mappings().all()
        prev = None
        for row in rows:
            record = row_to_record(row)
            if record.seq >= seq:
                if record.seq == seq:
                    record = dataclasses.replace(record, outcome=Outcome.FAIL, score=99.0)
                record = link(record, record.seq, prev)
                values = record_to_row(record)
                assignments = ", ".join(f"{k} = :{k}" for k in values if k != "seq")
                conn.execute(sa.text(f"UPDATE inspections SET {assignments} WHERE seq = :seq"), values)
            prev = record.record_hash
    engine.dispose()


def test_an_intact_log_verifies_against_its_signed_head(log_with_head):
    url, head_file = log_with_head
    head = read_signed_head(head_file)
    with AuditLog.open(url, read_only=True) as log:
        assert head == log.head()
        assert log.verify(expected_head=head).ok
        # Records appended since the head was exported do not break it.
    with AuditLog.open(url) as log:
        log.append(dataclasses.replace(log.get(1), part_id="late", seq=None))
        assert log.verify(expected_head=head).ok


def test_a_chain_recomputed_after_an_edit_passes_alone_but_not_against_the_signed_head(
    log_with_head, run_sql
):
    url, head_file = log_with_head
    _recompute_chain_from(url, run_sql, 2)
    with AuditLog.open(url, read_only=True) as log:
        assert log.get(2).outcome is Outcome.FAIL and log.get(2).score == 99.0
        assert log.verify().ok  # the edit is invisible to the chain alone
        result = log.verify(expected_head=read_signed_head(head_file))
    assert not result.ok and result.first_bad_seq == 6 and "not the one published as head" in result.problem


def test_a_truncated_log_is_caught_by_the_signed_head(log_with_head, run_sql):
    url, head_file = log_with_head
    run_sql(url, "DELETE FROM inspections WHERE seq > 3")
    with AuditLog.open(url, read_only=True) as log:
        assert log.verify().ok
        result = log.verify(expected_head=read_signed_head(head_file))
    assert not result.ok and "records 4..6 were removed" in result.problem


def test_an_edited_or_foreign_head_file_is_refused(log_with_head, tmp_path):
    _, head_file = log_with_head
    doc = json.loads(head_file.read_text())
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps({**doc, "seq": 3}))
    with pytest.raises(InputError, match=r"the head is not trusted: .*does not match its content"):
        read_signed_head(edited)
    other = KeyStore(tmp_path / "other")
    foreign = tmp_path / "foreign.json"
    write_signed_head(foreign, signed_head(read_signed_head(head_file), "x", other))
    with pytest.raises(InputError, match="not trusted by the key store"):
        read_signed_head(foreign)
    (tmp_path / "trust").mkdir()
    (tmp_path / "trust" / "auditor.pub").write_bytes(public_pem(other.signing_key()[0].public))
    assert read_signed_head(foreign, TrustPolicy.from_path(tmp_path / "trust")).seq == 6
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(InputError, match="not a flawscope signed audit head"):
        read_signed_head(tmp_path / "junk.json")


def test_head_files_are_plain_json(log_with_head):
    _, head_file = log_with_head
    doc = json.loads(Path(head_file).read_text())
    assert doc["format"] == "flawscope-audit-head" and doc["seq"] == 6 and len(doc["record_hash"]) == 64
    assert set(doc["signature"]) == {"key_id", "public_key", "value", "signed_at", "algorithm"}

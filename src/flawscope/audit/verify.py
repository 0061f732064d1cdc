"""Verification of the hash chain over a stream of rows (no database access here).

What the chain proves: every record still has the content it was written with (its hash), nothing
was inserted or removed between two records (``prev_hash`` links and gapless ``seq``). What it cannot
prove on its own: that records were not removed from the *end* of the log (a truncated chain is a
valid chain), nor that someone able to write the database did not recompute every hash after an
edit (the algorithm is public). Both are caught by comparing with a head ``(seq, record_hash)`` that
was published outside the database (MES, MQTT messages, a printed shift report): pass it as
``expected_head``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from flawscope.audit.chain import GENESIS_HASH, compute_hash, row_to_record


class ChainHead(NamedTuple):
    """The last record of a log: ``(0, GENESIS_HASH)`` for an empty log."""

    seq: int
    record_hash: str


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of ``AuditLog.verify``.

    Attributes:
        ok: every record checked is intact and linked, and the published head (if given) is there.
        n_records: records found intact before the first problem (all of them when ``ok``).
        first_bad_seq: ``seq`` of the first altered, missing or inserted record; ``None`` when ``ok``.
        problem: what is wrong, for a person; ``""`` when ``ok``.
    """

    ok: bool
    n_records: int
    first_bad_seq: int | None = None
    problem: str = ""


def _bad(n: int, seq: int, problem: str) -> VerifyResult:
    return VerifyResult(ok=False, n_records=n, first_bad_seq=seq, problem=problem)


def verify_rows(
    rows: Iterable[Mapping[Any, Any]],
    expected_head: ChainHead | None = None,
    schema_version: int | None = None,
) -> VerifyResult:
    """Recompute the chain over rows given in ascending ``seq`` order, stopping at the first problem.

    Args:
        rows: column mappings of the ``inspections`` table, ascending ``seq`` (streamed: O(1) memory).
        expected_head: a head published earlier; the log must contain it, unchanged.
        schema_version: the schema of the store the rows come from (``None``: the current one).

    Returns:
        The verification result; it names the first bad ``seq``.
    """
    expected_seq, prev_hash, n = 1, GENESIS_HASH, 0
    for row in rows:
        seq = int(row["seq"])
        if seq != expected_seq:
            if seq > expected_seq:
                missing = f"{expected_seq}" if seq == expected_seq + 1 else f"{expected_seq}..{seq - 1}"
                return _bad(
                    n,
                    expected_seq,
                    f"record(s) {missing} missing: seq jumps from {expected_seq - 1} to {seq}",
                )
            return _bad(n, seq, f"seq {seq} out of order after {expected_seq - 1}")
        try:
            record = row_to_record(row, schema_version)
        except (ValueError, TypeError, KeyError) as exc:
            return _bad(n, seq, f"record {seq} cannot be read ({exc}): it was edited outside the log")
        if compute_hash(record) != record.record_hash:
            return _bad(n, seq, f"record {seq} was altered: its content does not match its record_hash")
        if record.prev_hash != prev_hash:
            before = "the genesis hash" if seq == 1 else f"the record_hash of record {seq - 1}"
            return _bad(
                n, seq, f"record {seq} does not link to {before}: a record was rewritten, inserted or removed"
            )
        if (
            expected_head is not None
            and seq == expected_head.seq
            and record.record_hash != expected_head.record_hash
        ):
            return _bad(n, seq, f"record {seq} is not the one published as head: the log was rewritten")
        prev_hash, expected_seq, n = record.record_hash, expected_seq + 1, n + 1
    if expected_head is not None:
        if expected_head.seq > n:
            return _bad(
                n,
                n + 1,
                f"the log ends at seq {n} but head seq {expected_head.seq} was published: "
                f"records {n + 1}..{expected_head.seq} were removed",
            )
        if expected_head.seq == 0 and expected_head.record_hash != GENESIS_HASH:
            return _bad(n, 0, "the published head of an empty log is not the genesis hash")
    return VerifyResult(ok=True, n_records=n)

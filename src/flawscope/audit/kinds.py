"""The kinds of audit record: what each is, what it may point at, and which fields it must fill.

Adding a kind is one entry of :data:`KINDS`; normalisation (:func:`flawscope.audit.chain.normalize_record`)
and the log (:class:`flawscope.audit.AuditLog`) enforce its rules. No schema migration is needed: a
kind is a value of the ``kind`` column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flawscope.errors import InputError
from flawscope.types import InspectionRecord, Outcome


@dataclass(frozen=True)
class RecordKind:
    """One kind of audit record.

    Attributes:
        name: the value of the record's ``kind`` field.
        doc: what a record of this kind says.
        refers_to: kinds of record its ``ref_seq`` may point at; empty: it has no ``ref_seq``.
        required: text fields that must not be empty.
        outcomes: outcomes it may carry (empty: any).
    """

    name: str
    doc: str
    refers_to: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    outcomes: tuple[Outcome, ...] = ()


KINDS: dict[str, RecordKind] = {
    k.name: k
    for k in (
        RecordKind("inspection", "a part judged by a model on the line"),
        RecordKind(
            "override",
            "a person's decision that replaces the outcome of an inspection",
            refers_to=("inspection",),
            required=("operator", "reason"),
        ),
        RecordKind(
            "review",
            "a person's judgement of an inspected part (review queue): labels it, does not change the "
            "line's outcome; pass = good, fail = defective, review = unsure",
            refers_to=("inspection",),
            required=("operator",),
            outcomes=(Outcome.PASS, Outcome.FAIL, Outcome.REVIEW),
        ),
        RecordKind(
            "drift",
            "a drift-monitor event (flawscope.monitor): category names the statistic that moved, "
            "outcome its level (review = warning, fail = alarm, pass = back within limits), score the "
            "smoothed shift in calibration standard deviations, reason the message; part_id is the "
            "part that raised it",
            required=("reason", "category"),
            outcomes=(Outcome.PASS, Outcome.REVIEW, Outcome.FAIL),
        ),
        RecordKind(
            "web_defect",
            "a defect of a line-scan web, merged over the frames that saw it (flawscope.webscan): "
            "web_roll and the web_* fields place it on the roll (centre and size), score is its peak "
            "anomaly value, ref_seq the first frame's inspection record",
            refers_to=("inspection",),
            required=("web_roll",),
            outcomes=(Outcome.FAIL,),
        ),
        RecordKind(
            "model",
            "a model-registry event (a bundle registered, promoted, rolled back): model_hash and "
            "model_version name the bundle, reason says what happened, operator who did it",
            required=("reason",),
        ),
    )
}


def record_about(
    target: InspectionRecord, kind: str, outcome: Outcome | str, *, at: float, **fields: Any
) -> InspectionRecord:
    """A record of ``kind`` about ``target`` (an override or a review of an inspection).

    It copies the part, station, image and source of the record it is about, points at it with
    ``ref_seq``, and names no model (a person decided).

    Args:
        target: the stored record it is about (with its ``seq``).
        kind: a kind whose ``refers_to`` includes ``target.kind``.
        outcome: the decision (checked by normalisation against the kind's outcomes).
        at: time of the decision, seconds since the epoch.
        **fields: the other fields (``operator``, ``reason``, ``category``, ``regions``...).

    Raises:
        InputError: ``kind`` cannot be about a record of ``target``'s kind.
    """
    spec = KINDS.get(kind)
    if spec is None or not spec.refers_to:
        raise InputError("kind", f"{kind!r} is not a kind of record about another record")
    if target.kind not in spec.refers_to:
        allowed = ", ".join(spec.refers_to)
        problem = f"record {target.seq} is of kind {target.kind!r}; a {kind} can only be about: {allowed}"
        raise InputError("ref_seq", problem)
    return InspectionRecord(
        part_id=target.part_id,
        station=target.station,
        acquired_at=at,
        outcome=outcome,  # type: ignore[arg-type]  # normalize_record converts and checks it
        image_sha256=target.image_sha256,
        image_uri=target.image_uri,
        source=target.source,
        kind=kind,
        ref_seq=target.seq,
        **fields,
    )


def check_references(
    batch: Sequence[InspectionRecord], stored: Mapping[int, str], first_seq: int, where: str
) -> None:
    """Check that each record about another one points at an earlier record of a kind it may be about.

    Args:
        batch: normalised records about to be appended, in order.
        stored: ``seq -> kind`` of the stored records the batch points at.
        first_seq: the ``seq`` the first record of the batch will get.
        where: the log's URL, for messages.

    Raises:
        InputError: naming the missing record, or the kinds that do not fit.
    """
    kinds = dict(stored)
    kinds.update({first_seq + offset: record.kind for offset, record in enumerate(batch)})
    for offset, record in enumerate(batch):
        if record.ref_seq is None:
            continue
        target = kinds.get(record.ref_seq) if record.ref_seq < first_seq + offset else None
        allowed = KINDS[record.kind].refers_to
        if target is None:
            raise InputError("ref_seq", f"there is no record {record.ref_seq} in the audit log {where}")
        if target not in allowed:
            wanted = ", ".join(allowed)
            problem = f"record {record.ref_seq} is of kind {target!r}; a {record.kind} can only be about: "
            raise InputError("ref_seq", problem + wanted)

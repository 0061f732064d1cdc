"""Outcome monitoring from operator reviews: the escape rate and the false-reject rate, with their intervals.

The audit log holds every inspection and every review (records of kind ``review``: ``pass`` = the
reviewer found the part good, ``fail`` = defective, ``review`` = unsure, which is not a label).
The latest review of an inspection is its label.

* **Escape rate**: the share of passed parts that are defective, from the passed parts in the
  random review sample (:func:`flawscope.line.records.in_review_sample`, chosen from the image hash
  so nobody steers it). Only sampled parts count: a part an operator flagged was chosen because it
  looked wrong and would bias the estimate. Two-sided Clopper-Pearson interval.
* **False-reject rate**: the share of good parts that are rejected. From the rejects a person
  reviewed, the share that are good, ``g`` (Clopper-Pearson interval ``[g-, g+]``); with ``F``
  rejects and ``P`` passes on the line and the escape rate ``e`` (interval ``[e-, e+]``),
  ``FRR = F g / (F g + P (1 - e))``, increasing in ``g`` and in ``e``, so its interval is
  ``[FRR(g-, e-), FRR(g+, e+)]``. Each input interval has the stated confidence, so the combined one
  has at least ``2 c - 1`` (Bonferroni): 90% for two 95% intervals. Without a reviewed sample of
  passes, ``e = 0`` is assumed and said so. The reviewed rejects must be all of them or a random
  subset (reviewers working the whole reject list).

Each rate is compared with its promise: the FRR with the calibration's target (the active
thresholds' ``target_frr``), the escape rate with a maximum the plant sets. ``alarm`` when the whole
interval lies above the promise (the line is worse than promised, with that confidence),
``warning`` when only the estimate does, ``ok`` otherwise; ``unknown`` without reviews.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from flawscope.decide.calibration import clopper_pearson_interval
from flawscope.line.records import in_review_sample
from flawscope.types import InspectionRecord, Outcome

REJECTS = (Outcome.FAIL, Outcome.REVIEW, Outcome.ERROR, Outcome.NOT_INSPECTED)


@dataclass(frozen=True)
class RateEstimate:
    """A rate estimated from reviews, its interval and how it compares with its promise.

    Attributes:
        name: ``escape_rate`` or ``false_reject_rate``.
        estimate: the point estimate (None without reviews).
        low: lower end of the interval.
        high: upper end of the interval.
        confidence: the interval's (least) confidence.
        reviewed: parts whose reviews it rests on.
        found: of them, those that count (defective passes; good rejects).
        promise: the rate promised (None: no promise to compare with).
        level: ``ok``, ``warning``, ``alarm`` or ``unknown``.
        note: how it was computed and what it assumes.
    """

    name: str
    estimate: float | None
    low: float | None
    high: float | None
    confidence: float
    reviewed: int
    found: int
    promise: float | None
    level: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class OutcomeReport:
    """Both rates, and the counts they rest on.

    Attributes:
        escape: the escape rate among passed parts.
        false_reject: the false-reject rate among good parts.
        passes: passed inspections in the window.
        rejects: rejected inspections (fail, review, error, not inspected).
        sampled: passed inspections in the random review sample.
        sampled_reviewed: of them, those with a label.
        rejects_reviewed: rejects with a label.
    """

    escape: RateEstimate
    false_reject: RateEstimate
    passes: int
    rejects: int
    sampled: int
    sampled_reviewed: int
    rejects_reviewed: int

    @property
    def level(self) -> str:
        """The worse level of the two."""
        order = ("unknown", "ok", "warning", "alarm")
        return max(self.escape.level, self.false_reject.level, key=order.index)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for a dashboard endpoint)."""
        return {
            "level": self.level,
            "escape": self.escape.to_dict(),
            "false_reject": self.false_reject.to_dict(),
            "passes": self.passes,
            "rejects": self.rejects,
            "sampled": self.sampled,
            "sampled_reviewed": self.sampled_reviewed,
            "rejects_reviewed": self.rejects_reviewed,
        }


def _level(low: float | None, estimate: float | None, promise: float | None) -> str:
    if estimate is None or low is None:
        return "unknown"
    if promise is None:
        return "ok"
    if low > promise:
        return "alarm"
    return "warning" if estimate > promise else "ok"


def _frr(rejects: int, passes: int, good_share: float, escape: float) -> float:
    good_rejects = rejects * good_share
    good_total = good_rejects + passes * (1.0 - escape)
    return good_rejects / good_total if good_total > 0 else 0.0


def outcome_report(
    records: Iterable[InspectionRecord],
    *,
    sample_rate: float,
    target_frr: float | None,
    max_escape_rate: float | None = None,
    confidence: float = 0.95,
    station: str | None = None,
    model_hash: str | None = None,
) -> OutcomeReport:
    """Estimate the escape and false-reject rates from the inspections and reviews of an audit log.

    Args:
        records: the audit log's records in ``seq`` order (any kinds; streamed once).
        sample_rate: the fraction of passed parts sampled for review (the line's ``review_sample``).
        target_frr: the false-reject rate promised at calibration (the thresholds' ``target_frr``).
        max_escape_rate: the escape rate the plant accepts (None: reported, never alarmed).
        confidence: confidence of each interval.
        station: only this station's records (``station`` or ``station/camera``).
        model_hash: only parts judged by this model (None: every model).

    Returns:
        The report.
    """
    outcome_of: dict[int, Outcome] = {}
    sampled_seqs: set[int] = set()
    labels: dict[int, Outcome] = {}
    passes = rejects = 0
    for record in records:
        if station is not None and record.station != station:
            continue
        if record.kind == "inspection":
            if model_hash is not None and record.model_hash != model_hash:
                continue
            assert record.seq is not None
            outcome_of[record.seq] = record.outcome
            if record.outcome is Outcome.PASS:
                passes += 1
                if in_review_sample(record.image_sha256, sample_rate):
                    sampled_seqs.add(record.seq)
            else:
                rejects += 1
        elif record.kind == "review" and record.ref_seq is not None:
            if record.outcome is Outcome.REVIEW:  # unsure: not a label, and it replaces none
                continue
            labels[record.ref_seq] = record.outcome
    sampled_labels = [labels[s] for s in sampled_seqs if s in labels]
    reject_labels = [v for s, v in labels.items() if outcome_of.get(s) in REJECTS]
    escapes = sum(1 for v in sampled_labels if v is Outcome.FAIL)
    good_rejects = sum(1 for v in reject_labels if v is Outcome.PASS)

    e_low: float | None = None
    e_high: float | None = None
    e_hat: float | None = None
    if sampled_labels:
        e_low, e_high = clopper_pearson_interval(escapes, len(sampled_labels), confidence)
        e_hat = escapes / len(sampled_labels)
    escape = RateEstimate(
        name="escape_rate",
        estimate=e_hat,
        low=e_low,
        high=e_high,
        confidence=confidence,
        reviewed=len(sampled_labels),
        found=escapes,
        promise=max_escape_rate,
        level=_level(e_low, e_hat, max_escape_rate),
        note=f"{len(sampled_labels)} of {len(sampled_seqs)} sampled passes reviewed",
    )
    if reject_labels:
        g_low, g_high = clopper_pearson_interval(good_rejects, len(reject_labels), confidence)
        g_hat = good_rejects / len(reject_labels)
        assumed = e_hat is None
        el, eh, ep = (0.0, 0.0, 0.0) if assumed else (e_low or 0.0, e_high or 0.0, e_hat or 0.0)
        f_hat: float | None = _frr(rejects, passes, g_hat, ep)
        f_low: float | None = _frr(rejects, passes, g_low, el)
        f_high: float | None = _frr(rejects, passes, g_high, eh)
        note = (
            f"{good_rejects} of {len(reject_labels)} reviewed rejects were good; "
            f"{rejects} rejects, {passes} passes"
        )
        if assumed:
            note += "; no reviewed sample of passes: escapes assumed 0"
        level_conf = confidence if assumed else max(0.0, 2 * confidence - 1)
    else:
        f_hat = f_low = f_high = None
        note, level_conf = "no reviewed rejects", confidence
    false_reject = RateEstimate(
        name="false_reject_rate",
        estimate=f_hat,
        low=f_low,
        high=f_high,
        confidence=level_conf,
        reviewed=len(reject_labels),
        found=good_rejects,
        promise=target_frr,
        level=_level(f_low, f_hat, target_frr),
        note=note,
    )
    return OutcomeReport(
        escape=escape,
        false_reject=false_reject,
        passes=passes,
        rejects=rejects,
        sampled=len(sampled_seqs),
        sampled_reviewed=len(sampled_labels),
        rejects_reviewed=len(reject_labels),
    )


def describe(rate: RateEstimate) -> str:
    """One line for people: estimate, interval, promise and level."""
    if rate.estimate is None or rate.low is None or rate.high is None:
        return f"{rate.name}: no reviews yet"
    promise = "" if rate.promise is None else f", promise {rate.promise:.2%}"
    return (
        f"{rate.name} {rate.estimate:.2%} ({rate.confidence:.0%} interval {rate.low:.2%}-{rate.high:.2%}, "
        f"{rate.reviewed} reviewed{promise}): {rate.level}"
    )

"""Shadow evaluation: a candidate judges the live parts beside the live model, and never changes a verdict.

:class:`ShadowObserver` is a line observer (``run_line(monitor=...)``): after the live model has
decided a batch, the candidate judges the same images and its verdicts go to the results store
(table ``reinspections``, archive ``shadow:<station>``, keyed by part id, written idempotently),
never to the audit chain or the sinks. A candidate whose preprocessing differs from the live
model's is refused with the reason (:func:`~flawscope.improve.compare.shadow_refusal`).
:func:`shadow_agreement` then compares both models' decisions part by part.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from flawscope.errors import InputError
from flawscope.improve.compare import Rate, shadow_refusal
from flawscope.reinspect.store import ResultStore, Scope
from flawscope.reinspect.worker import ChunkResult
from flawscope.types import Outcome, Verdict

logger = logging.getLogger(__name__)


def shadow_scope(station: str, candidate: Any) -> Scope:
    """Where a candidate's shadow verdicts on ``station`` are stored."""
    thresholds = candidate.thresholds
    version = thresholds.version if thresholds is not None else 0
    return Scope(
        f"shadow:{station}", candidate.model_hash, version, candidate.version, f"shadow on {station}"
    )


class ShadowObserver:
    """Runs a candidate on every judged part of a line and stores its verdicts (see the module docstring).

    Args:
        live: the live inspector (for the preprocessing check).
        candidate: the candidate's inspector.
        store: the results store.
        station: the station name (the store's archive is ``shadow:<station>``).
        then: another observer to call first (the drift monitor), so one line can run both.

    Raises:
        InputError: the candidate's preprocessing differs from the live model's (with the reason).
    """

    def __init__(self, live: Any, candidate: Any, store: ResultStore, station: str, then: Any = None) -> None:
        refusal = shadow_refusal(live.bundle.manifest, candidate.bundle.manifest)
        if refusal:
            raise InputError("shadow", f"{candidate.bundle.path}: refused for shadow comparison: {refusal}")
        self.candidate = candidate
        self.store = store
        self.scope = shadow_scope(station, candidate)
        self.then = then
        self.parts = 0
        # Running decisions against the live model's (stop = review, fail or error), for the
        # line's summary; the stored rows stay the record (shadow_agreement, model compare).
        self.same = 0
        self.stopped_more = 0  # parts the live model passed and the candidate stopped
        self.passed_more = 0  # parts the live model stopped and the candidate passed
        self.failed_batches = 0

    def observe_many(
        self, images: Sequence[np.ndarray | None], verdicts: Sequence[Verdict], part_ids: Sequence[str]
    ) -> None:
        """Judge the batch with the candidate and store its verdicts (errors are logged, never raised)."""
        if self.then is not None:
            try:
                self.then.observe_many(images, verdicts, part_ids)
            except Exception:
                logger.exception("observer %r failed (the line goes on)", self.then)
        judged = [
            (i, image) for i, (image, v) in enumerate(zip(images, verdicts, strict=True)) if image is not None
        ]
        if not judged:
            return
        try:
            shadow = self.candidate.inspect_many([image for _, image in judged])
            rows = [
                ChunkResult(
                    key=part_ids[i],
                    image_sha256="",
                    outcome=v.outcome.value,
                    score=float(v.score),
                    normalized_score=float(v.normalized_score),
                    regions=len(v.regions),
                    reason=v.reason,
                    worker="shadow",
                )
                for (i, _), v in zip(judged, shadow, strict=True)
            ]
            self.store.write(self.scope, rows)
            self.parts += len(rows)
            for (i, _), v in zip(judged, shadow, strict=True):
                live_stop, cand_stop = verdicts[i].outcome is not Outcome.PASS, v.outcome is not Outcome.PASS
                self.same += int(live_stop == cand_stop)
                self.stopped_more += int(cand_stop and not live_stop)
                self.passed_more += int(live_stop and not cand_stop)
        except Exception:
            self.failed_batches += 1
            logger.exception("the shadow model failed on a batch (the line goes on)")

    def describe(self) -> str:
        """One line for the line's summary: how the candidate decided beside the live model."""
        if not self.parts:
            text = "judged no part"
        else:
            text = (
                f"judged {self.parts} parts: the same decision on {self.same} "
                f"({self.same / self.parts:.1%}); stopped {self.stopped_more} the live model passed, "
                f"passed {self.passed_more} it stopped"
            )
        if self.failed_batches:
            text += f"; failed on {self.failed_batches} batch(es) (logged)"
        return (
            f"{text}. Verdicts in archive {self.scope.archive!r}; 'flawscope model compare' judges the "
            "reviewed parts"
        )


def shadow_agreement(
    records: Iterable[Any], shadow_rows: Iterable[dict[str, Any]], confidence: float = 0.95
) -> Rate:
    """How often the candidate in shadow took the live model's decision (pass, or stop) on the same parts.

    Args:
        records: the audit log's records (the live inspections).
        shadow_rows: the candidate's stored shadow results (:meth:`ResultStore.results`).
        confidence: of the interval.
    """
    stopped = {row["image_key"]: row["outcome"] != Outcome.PASS.value for row in shadow_rows}
    same = n = 0
    for record in records:
        if record.kind != "inspection" or record.part_id not in stopped:
            continue
        n += 1
        same += int((record.outcome is not Outcome.PASS) == stopped[record.part_id])
    rate = Rate.of(same, n, confidence)
    return rate if n else Rate(0, 0, math.nan, math.nan, math.nan, math.nan)

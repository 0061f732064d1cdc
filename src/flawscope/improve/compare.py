"""``flawscope model compare``: live model and candidate on the plant's own parts, with intervals and gates.

Both deployable bundles judge the same images with the torch-free runtime:

* **labelled parts**: the parts operators reviewed (the latest review of each inspection, from the
  audit log; unsure reviews are not labels) and, optionally, a labelled dataset (its test split,
  e.g. defect types held back). Recall (defective parts not passed: failed or sent to review) on
  all of them and per defect type, each with its Clopper-Pearson interval; the false-reject rate
  on the good ones with its one-sided upper bound.
* **unlabelled parts**: images of an archive nobody reviewed; the share on which both models take
  the same decision (pass, or stop), with its interval.

The gates (:class:`~flawscope.improve.gates.GateConfig`, judged by
:func:`~flawscope.improve.gates.evaluate_gates`) decide whether the candidate may be promoted.
Recall is compared part by part (both models judge the same parts): each recall gate is a paired
test on the parts the two models judge differently, with its interval, margin and
confidence (:mod:`flawscope.improve.paired`): by default the candidate must show non-inferiority within 5
points on all labelled defects, and is refused on any defect type where the live model catches
parts it misses significantly more often than the reverse (McNemar's exact test). A candidate
whose preprocessing differs from the live model's is refused for comparison: its verdicts would
not be about the same input.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flawscope.decide.calibration import clopper_pearson_interval, clopper_pearson_upper
from flawscope.decide.thresholds import utc_now_iso
from flawscope.errors import InputError
from flawscope.improve.gates import Gate, GateConfig, evaluate_gates
from flawscope.jsonsafe import finite_or_none
from flawscope.types import Outcome

GOOD = "good"


@dataclass(frozen=True)
class Labelled:
    """A labelled image to judge.

    Attributes:
        path: the image file.
        label: ``"good"`` or the defect type.
        origin: ``"review"`` (audit log) or ``"dataset"``.
        sha256: the image's SHA-256, when known (used to drop duplicates).
        review_seq: the audit record of the review that labelled it (reviewed parts).
    """

    path: str
    label: str
    origin: str
    sha256: str = ""
    review_seq: int | None = None


@dataclass(frozen=True)
class Rate:
    """A proportion ``k / n`` with its two-sided interval and one-sided upper bound.

    Attributes:
        k: successes.
        n: trials.
        rate: ``k / n`` (NaN for ``n = 0``).
        low: lower end of the two-sided interval.
        high: upper end of the two-sided interval.
        upper: one-sided upper bound.
    """

    k: int
    n: int
    rate: float
    low: float
    high: float
    upper: float

    @classmethod
    def of(cls, k: int, n: int, confidence: float) -> Rate:
        """The rate of ``k`` out of ``n`` at ``confidence``."""
        if n == 0:
            nan = math.nan
            return cls(0, 0, nan, nan, nan, nan)
        low, high = clopper_pearson_interval(k, n, confidence)
        return cls(k, n, k / n, low, high, float(clopper_pearson_upper(k, n, confidence)))


@dataclass(frozen=True)
class ModelResults:
    """One model's results on the labelled parts.

    Attributes:
        version: the bundle's version label.
        model_hash: its weights hash.
        recall: defective parts stopped, all types.
        recall_by_type: the same per defect type.
        frr: good parts stopped.
        stopped: image path -> whether it stopped the part (for the paired counts).
    """

    version: str
    model_hash: str
    recall: Rate
    recall_by_type: dict[str, Rate]
    frr: Rate
    stopped: dict[str, bool] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Comparison:
    """The live model and a candidate on the same parts.

    Attributes:
        live: the live model's results.
        candidate: the candidate's results.
        agreement: share of unlabelled parts both judged alike (None without any).
        paired: defective parts stopped by one model only: ``{"candidate_only": n, "live_only": n}``.
        gates: each gate's verdict.
        refused: why the two cannot be compared (``""``: they can).
        labelled: labelled parts per label.
        unreadable: labelled or unlabelled images that could not be read.
        created_at: ISO 8601 UTC time.
        config: the gates applied.
        trained_on: labelled parts left out because either model was retrained from their review
            or fitted on their image (by content: a candidate that learnt from the base set's test
            defects is not judged on them).
    """

    live: ModelResults | None
    candidate: ModelResults | None
    agreement: Rate | None
    paired: dict[str, int]
    gates: tuple[Gate, ...]
    refused: str
    labelled: dict[str, int]
    unreadable: tuple[str, ...]
    created_at: str
    config: GateConfig
    trained_on: int = 0

    @property
    def passed(self) -> bool:
        """Whether the candidate may be promoted: comparable, and every gate holds."""
        return not self.refused and bool(self.gates) and all(g.passed for g in self.gates)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN as null)."""
        data = asdict(self)
        for side in ("live", "candidate"):
            if data[side] is not None:
                data[side].pop("stopped", None)
        data["passed"] = self.passed
        return finite_or_none(data)


def shadow_refusal(live_manifest: Any, candidate_manifest: Any) -> str:
    """Why a candidate cannot be compared with the live model part by part (``""``: it can)."""
    a, b = live_manifest.preprocessing, candidate_manifest.preprocessing
    if a == b:
        return ""
    changed = [
        f"{k} {getattr(a, k)!r} -> {getattr(b, k)!r}"
        for k in a.__dataclass_fields__
        if getattr(a, k) != getattr(b, k)
    ]
    return (
        "the candidate was trained on a different preprocessing than the live model "
        f"({'; '.join(changed)}): its verdicts are not about the same input"
    )


def _judge(inspector: Any, paths: Sequence[str]) -> tuple[dict[str, bool], list[str]]:
    from flawscope.data.imageio import read_image

    stopped: dict[str, bool] = {}
    unreadable: list[str] = []
    for start in range(0, len(paths), 8):
        chunk, images = [], []
        for path in paths[start : start + 8]:
            try:
                images.append(read_image(path))
                chunk.append(path)
            except Exception:  # an unreadable file is listed, never counted as a pass
                unreadable.append(path)
        for path, verdict in zip(chunk, inspector.inspect_many(images), strict=True):
            stopped[path] = verdict.outcome is not Outcome.PASS
    return stopped, unreadable


def _results(
    inspector: Any, labelled: Sequence[Labelled], stopped: dict[str, bool], confidence: float
) -> ModelResults:
    defects = [item for item in labelled if item.label != GOOD and item.path in stopped]
    good = [item for item in labelled if item.label == GOOD and item.path in stopped]
    by_type: dict[str, list[bool]] = {}
    for item in defects:
        by_type.setdefault(item.label, []).append(stopped[item.path])
    return ModelResults(
        version=inspector.version,
        model_hash=inspector.model_hash,
        recall=Rate.of(sum(stopped[i.path] for i in defects), len(defects), confidence),
        recall_by_type={t: Rate.of(sum(v), len(v), confidence) for t, v in sorted(by_type.items())},
        frr=Rate.of(sum(stopped[i.path] for i in good), len(good), confidence),
        stopped={i.path: stopped[i.path] for i in labelled if i.path in stopped},
    )


def compare_models(
    live: str | os.PathLike[str] | Any,
    candidate: str | os.PathLike[str] | Any,
    labelled: Sequence[Labelled],
    unlabelled: Sequence[str] = (),
    config: GateConfig | None = None,
) -> Comparison:
    """Judge the labelled and unlabelled parts with both models and apply the gates.

    Args:
        live: the live deployable bundle (path or loaded ``Inspector``).
        candidate: the candidate's deployable bundle (path or ``Inspector``).
        labelled: labelled images (:func:`labelled_from_reviews`, :func:`labelled_from_dataset`).
        unlabelled: image files nobody labelled (for the agreement).
        config: the gates.
    """
    from flawscope.runtime import Inspector

    config = config or GateConfig()
    live_inspector = live if hasattr(live, "inspect_many") else Inspector.load(live)
    candidate_inspector = candidate if hasattr(candidate, "inspect_many") else Inspector.load(candidate)
    # A part whose review a model was retrained from, or whose image it was fitted on, is not
    # evidence about that model.
    seen = _reviews_trained_on(live_inspector) | _reviews_trained_on(candidate_inspector)
    kept = [item for item in labelled if item.review_seq is None or item.review_seq not in seen]
    kept = _not_fitted_on(kept, (live_inspector, candidate_inspector))
    trained_on, labelled = len(labelled) - len(kept), kept
    counts: dict[str, int] = {}
    for item in labelled:
        counts[item.label] = counts.get(item.label, 0) + 1
    refused = shadow_refusal(live_inspector.bundle.manifest, candidate_inspector.bundle.manifest)  # type: ignore[union-attr]
    if refused:
        return Comparison(None, None, None, {}, (), refused, counts, (), utc_now_iso(), config, trained_on)
    paths = [item.path for item in labelled]
    live_stopped, bad = _judge(live_inspector, paths)
    cand_stopped, _ = _judge(candidate_inspector, paths)
    live_results = _results(live_inspector, labelled, live_stopped, config.confidence)
    cand_results = _results(candidate_inspector, labelled, cand_stopped, config.confidence)
    defects = [i.path for i in labelled if i.label != GOOD and i.path in live_stopped]
    paired = {
        "candidate_only": sum(1 for p in defects if cand_stopped[p] and not live_stopped[p]),
        "live_only": sum(1 for p in defects if live_stopped[p] and not cand_stopped[p]),
    }
    agreement = None
    if unlabelled:
        a, bad_a = _judge(live_inspector, list(unlabelled))
        b, _ = _judge(candidate_inspector, list(unlabelled))
        same = sum(1 for p in a if a[p] == b[p])
        agreement = Rate.of(same, len(a), config.confidence)
        bad += bad_a
    labels = {i.path: i.label for i in labelled if i.path in live_stopped and i.path in cand_stopped}
    gates = evaluate_gates(live_results, cand_results, agreement, config, labels)
    return Comparison(
        live_results, cand_results, agreement, paired, gates, "", counts, tuple(bad), utc_now_iso(), config,
        trained_on,
    )  # fmt: skip


def _not_fitted_on(labelled: list[Labelled], inspectors: Sequence[Any]) -> list[Labelled]:
    """The labelled parts whose image neither model was fitted on (the manifests' file records)."""
    from flawscope.data.imageio import sha256_file
    from flawscope.models.provenance import trained_on

    fitted: set[str] = set()
    for inspector in inspectors:
        fitted |= set(trained_on(inspector.bundle.manifest) or ())
    if not fitted:
        return labelled

    def content(item: Labelled) -> str:
        if item.sha256:
            return item.sha256
        try:
            return sha256_file(item.path)
        except OSError:
            return ""  # unreadable: judged (and listed as unreadable) like any other

    return [item for item in labelled if content(item) not in fitted]


def _reviews_trained_on(inspector: Any) -> set[int]:
    lineage = getattr(inspector.bundle.manifest, "lineage", None)
    return set(lineage.reviews) if lineage is not None else set()


def labelled_from_dataset(folder: str | os.PathLike[str]) -> list[Labelled]:
    """The test split of a dataset folder as labelled parts (good and each defect type)."""
    from flawscope.data.datasets import load_dataset

    dataset = load_dataset(folder)
    if not dataset.test:
        raise InputError(folder, "no test split: a labelled dataset needs test/good and defect folders")
    return [Labelled(s.path, "good" if s.label == 0 else s.defect_type, "dataset") for s in dataset.test]


def labelled_from_reviews(records: Iterable[Any]) -> list[Labelled]:
    """The reviewed parts of an audit log: the latest review of each inspection is its label.

    Unsure reviews are not labels; parts without a stored image are skipped; an image reviewed
    under two different labels (two inspections of one file) is left out.
    """
    images: dict[int, tuple[str, str]] = {}
    labels: dict[int, str | None] = {}
    by_review: dict[int, int] = {}
    for record in records:
        if record.kind == "inspection" and record.image_uri and record.seq is not None:
            images[record.seq] = (record.image_uri, record.image_sha256)
        elif record.kind == "review" and record.ref_seq is not None:
            if record.outcome is Outcome.REVIEW:
                continue
            labels[record.ref_seq] = GOOD if record.outcome is Outcome.PASS else (record.category or "defect")
            if record.seq is not None:
                by_review[record.ref_seq] = record.seq
    by_sha: dict[str, set[str]] = {}
    found = []
    for seq, label in labels.items():
        if seq not in images or label is None:
            continue
        path, sha = images[seq]
        by_sha.setdefault(sha, set()).add(label)
        found.append(Labelled(path, label, "review", sha, by_review.get(seq)))
    clash = {sha for sha, values in by_sha.items() if len(values) > 1}
    seen: set[str] = set()
    out = []
    for item in found:
        if item.sha256 in clash or (item.sha256 and item.sha256 in seen) or not Path(item.path).is_file():
            continue
        seen.add(item.sha256)
        out.append(item)
    return out

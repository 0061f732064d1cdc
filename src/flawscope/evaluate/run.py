"""Evaluating a bundle on a dataset's test split: scores, metrics, the operating point, the report."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flawscope.bundle import update_manifest
from flawscope.data.datasets import load_dataset, read_samples
from flawscope.decide.calibration import clopper_pearson_interval, clopper_pearson_upper
from flawscope.decide.thresholds import Thresholds
from flawscope.decide.verdict import decide_many, outcomes
from flawscope.errors import InputError
from flawscope.evaluate.metrics import EvaluationSummary, evaluate_scores
from flawscope.jsonsafe import finite_or_none
from flawscope.types import Prediction, Sample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OperatingPoint:
    """How the bundle's active thresholds do on the test split.

    Attributes:
        thresholds: the active thresholds.
        frr: share of good test parts rejected (score >= reject).
        frr_upper_bound: one-sided 95% Clopper-Pearson upper bound of ``frr``.
        recall: share of defective test parts rejected.
        recall_ci: two-sided 95% Clopper-Pearson interval of ``recall``.
        review_rate: share of all test parts sent to review.
        n_good: good test parts.
        n_defect: defective test parts.
    """

    thresholds: Thresholds
    frr: float
    frr_upper_bound: float
    recall: float | None
    recall_ci: tuple[float, float] | None
    review_rate: float
    n_good: int
    n_defect: int

    def to_dict(self) -> dict[str, Any]:  # noqa: D102
        return {
            "threshold_version": self.thresholds.version,
            "reject": self.thresholds.reject,
            "review": self.thresholds.review,
            "frr": self.frr,
            "frr_upper_bound": self.frr_upper_bound,
            "recall": self.recall,
            "recall_ci": list(self.recall_ci) if self.recall_ci else None,
            "review_rate": self.review_rate,
            "n_good": self.n_good,
            "n_defect": self.n_defect,
        }


@dataclass(frozen=True)
class EvaluationRun:
    """Everything an evaluation produced."""

    summary: EvaluationSummary
    operating_point: OperatingPoint | None
    samples: list[Sample]
    prediction: Prediction = field(repr=False)
    masks: list[np.ndarray | None] = field(repr=False)
    skipped: list[tuple[str, str]]
    predict_seconds: float
    bundle_version: str
    model_hash: str
    supervised: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:  # noqa: D102
        return finite_or_none(
            {
                **self.supervised,
                "metrics": self.summary.to_dict(),
                "operating_point": self.operating_point.to_dict() if self.operating_point else None,
                "n_images": len(self.samples),
                "skipped": [{"path": p, "problem": why} for p, why in self.skipped],
                "predict_seconds": round(self.predict_seconds, 3),
                "images_per_second": round(len(self.samples) / self.predict_seconds, 2)
                if self.predict_seconds
                else None,
                "bundle_version": self.bundle_version,
                "model_hash": self.model_hash,
            }
        )


def operating_point(
    prediction: Prediction | np.ndarray, labels: np.ndarray, thresholds: Thresholds
) -> OperatingPoint:
    """Outcome rates of ``thresholds`` on scored test parts, with Clopper-Pearson bounds.

    Every part is decided by :func:`~flawscope.decide.verdict.decide_many`, region rules included
    when the prediction has maps; a fail is a reject, a review (or error) is counted in the
    review rate.

    Args:
        prediction: the parts' finished outputs (or bare ``(N,)`` scores).
        labels: ``(N,)`` 0 good, 1 defective.
        thresholds: the thresholds to decide with.
    """
    if not isinstance(prediction, Prediction):
        prediction = Prediction(np.asarray(prediction, dtype=np.float32))
    found = outcomes(decide_many(prediction, thresholds, regions=False))
    labels = np.asarray(labels)
    good, bad = found[labels == 0], found[labels == 1]
    false_rejects = int((good == "fail").sum())
    caught = int((bad == "fail").sum())
    review = int(((found == "review") | (found == "error")).sum())
    return OperatingPoint(
        thresholds,
        frr=false_rejects / max(len(good), 1),
        frr_upper_bound=float(clopper_pearson_upper(false_rejects, len(good))) if len(good) else float("nan"),
        recall=caught / len(bad) if len(bad) else None,
        recall_ci=clopper_pearson_interval(caught, len(bad)) if len(bad) else None,
        review_rate=review / max(len(found), 1),
        n_good=len(good),
        n_defect=len(bad),
    )


def evaluate_bundle(
    bundle_path: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    frr: float = 0.01,
    report: str | os.PathLike[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    store_metrics: bool = True,
) -> EvaluationRun:
    """Score a dataset's test split with a trained bundle and compute every metric.

    Args:
        bundle_path: trained bundle.
        data: dataset folder with a test split.
        frr: false-reject rate for the recall-at-FRR metric.
        report: write the HTML validation report (and its JSON twin) here.
        progress: callback ``(stage, done, total)``.
        store_metrics: record the metrics in the bundle's manifest.

    Raises:
        InputError: when the dataset has no test images or none could be read.
    """
    from flawscope.models.io import load_model

    model, bundle = load_model(bundle_path)
    root, name, test = _test_samples(data, bundle.manifest)
    loaded = read_samples(test)
    if not loaded.images:
        raise InputError(root, "none of the test images could be read")
    start = time.perf_counter()
    prediction = model.predict(loaded.images, progress=progress)
    seconds = time.perf_counter() - start
    labels = np.array([s.label for s in loaded.samples])
    # Every model gives maps but those of a classifier; without ground-truth masks there is nothing
    # to score them against, and the note must say that masks are missing, not maps.
    has_masks = bool(prediction.maps) and any(m is not None and m.any() for m in loaded.masks)
    summary = evaluate_scores(
        prediction.scores,
        labels,
        [s.defect_type for s in loaded.samples],
        maps=list(prediction.maps),
        masks=list(loaded.masks) if has_masks else None,
        frr=frr,
    )
    point = None
    active = bundle.manifest.select_thresholds()
    if active is not None:
        point = operating_point(prediction, labels, active)
    run = EvaluationRun(
        summary,
        point,
        loaded.samples,
        prediction,
        loaded.masks,
        loaded.skipped,
        seconds,
        bundle.version,
        bundle.model_hash,
        _supervised_metrics(
            prediction,
            loaded.samples,
            loaded.masks,
            _test_boxes(data, bundle.manifest) if prediction.boxes else None,
        ),
    )
    if store_metrics:
        update_manifest(bundle, metrics={"dataset": root, **run.to_dict()})
    if report is not None:
        from flawscope.evaluate.report import build_report

        build_report(run, bundle, name, Path(report))
    return run


def _test_samples(data: str | os.PathLike[str], manifest: Any) -> tuple[str, str, list[Sample]]:
    """The test split of ``data``.

    The MVTec/plain layout's test split, or for a model trained on labels the labelled data's test
    side (``test/`` folders or the CSV's ``split`` column).

    Raises:
        InputError: when there is no test split.
    """
    if manifest.training.task is None:
        dataset = load_dataset(data)
        if not dataset.test:
            raise InputError(
                dataset.root, "no test images: evaluation needs a test/ split (good and defective parts)"
            )
        return dataset.root, dataset.name, list(dataset.test)
    from flawscope.data.labelled import load_labelled

    labels = dict(manifest.training.labels or {})
    labelled = load_labelled(data, labels.get("group_pattern"))
    known = set(manifest.model.declaration.classes if manifest.model.declaration else ())
    test = [s for s in labelled.samples if s.split == "test"]
    if not test:
        raise InputError(
            labelled.root,
            "no test split (test/ folders or a split column): cross-validate with --cv K instead",
        )
    for s in test:
        if known and s.cls not in known and s.cls != "good":
            raise InputError(
                s.path, f"class {s.cls!r} is not one the model knows ({', '.join(sorted(known))})"
            )
    samples = [Sample(s.path, s.label, s.cls, s.mask_path) for s in test]
    return labelled.root, labelled.name, sorted(samples, key=lambda s: (s.label, s.defect_type, s.path))


def _test_boxes(data: str | os.PathLike[str], manifest: Any) -> dict[str, tuple[Any, ...]]:
    """The labelled data's boxes by image path (for a model that gives boxes)."""
    from flawscope.data.labelled import load_labelled

    labels = dict(manifest.training.labels or {})
    return {s.path: tuple(s.boxes) for s in load_labelled(data, labels.get("group_pattern")).samples}


def _supervised_metrics(
    prediction: Prediction,
    samples: list[Sample],
    masks: list[np.ndarray | None],
    boxes: dict[str, tuple[Any, ...]] | None = None,
) -> dict[str, Any]:
    """Categories (confusion, precision/recall, ECE), Dice/IoU and mAP@0.5 of a supervised model.

    Args:
        prediction: the model's outputs for the samples.
        samples: the test samples.
        masks: their masks (``None`` where unknown).
        boxes: true boxes by image path, for a model that gives boxes.
    """
    from flawscope.evaluate.supervised import category_metrics, detection_map, overlap_metrics

    out: dict[str, Any] = {}
    if boxes is not None and prediction.boxes:
        truth_boxes = [boxes.get(s.path, ()) for s in samples]
        out["detection"] = detection_map(prediction.boxes, truth_boxes, prediction.classes)
    truth = [s.defect_type for s in samples]
    if prediction.class_probs is not None and prediction.classes:
        out["categories"] = category_metrics(prediction.class_probs, truth, prediction.classes).to_dict()
    if (
        prediction.map_scale == "probability"
        and prediction.maps
        and any(m is not None and m.any() for m in masks)
    ):
        defect_masks = [m if s.label == 1 else None for m, s in zip(masks, samples, strict=True)]
        found = overlap_metrics(
            prediction.maps, prediction.class_maps or None, defect_masks, truth, prediction.classes
        )
        out["segmentation"] = found.to_dict()
    return out

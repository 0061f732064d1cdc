"""The validation report: one self-contained HTML file a quality engineer signs off, and its JSON twin.

Every number comes from :func:`flawscope.evaluate.metrics.evaluate_scores` (the
:class:`EvaluationSummary` passed in) or from counting parts at the operating point; the HTML and
the JSON are rendered from the same content, so they cannot disagree. Figures are PNG embedded as
base64: the file opens offline, prints, and can be archived with the bundle.

The operating point is the given thresholds (calibrated on held-out good parts, or set by hand).
Without thresholds it is the lowest threshold whose false-reject rate on the *test* good parts
is at most the summary's FRR target (1% by default), and the report says that this point was
chosen on the test set itself and is optimistic (:mod:`flawscope.evaluate.report_point`). Where
neither exists (a test set of defect types only: a classifier that sorts defects) the report has
no outcomes, curves or galleries and says so; its categories are the result.

This module assembles the content (per defect type, categories, segmentation, notes, galleries,
figures) and writes the files; the page itself is drawn by :mod:`flawscope.evaluate.report_html`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import flawscope
from flawscope.errors import InputError
from flawscope.evaluate.gallery import HeatScale, Tile, make_tiles, worst_defects, worst_good
from flawscope.evaluate.metrics import GOOD, Metrics
from flawscope.evaluate.plots import OperatingMarker, curves_png, histogram_png
from flawscope.evaluate.report_data import CalibrationInfo, ReportData
from flawscope.evaluate.report_html import render_html
from flawscope.evaluate.report_point import decided, point_content

if TYPE_CHECKING:
    from flawscope.bundle import Bundle
    from flawscope.evaluate.run import EvaluationRun

GALLERY_SIZE = 8
__all__ = ["GALLERY_SIZE", "CalibrationInfo", "ReportData", "build_content", "build_report", "write_report"]


def _clean(value: Any) -> Any:
    """JSON-ready copy: numpy scalars become Python numbers, NaN and infinity become ``None``."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _per_type(data: ReportData, point: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    types = np.asarray(data.defect_types)
    found = np.asarray(point["outcomes"] or ["-"] * len(data.labels), dtype=object)
    items: list[tuple[str, Metrics, np.ndarray]] = [
        (name, m, types == name) for name, m in sorted(data.summary.per_type.items())
    ]
    items.append(("all defect types", data.summary.overall, types != GOOD))
    for name, metrics, keep in items:
        part = found[keep]
        fail = int((part == "fail").sum())
        recall = fail / part.size if part.size else None
        if not point["calibrated"]:
            recall = metrics.recall_at_frr
        # Without an operating point no part has an outcome: the counts are undefined, not 0.
        exists = point["exists"]
        rows.append(
            {
                "defect_type": name,
                "count": int(part.size),
                "fail": fail if exists else None,
                "review": int(((part == "review") | (part == "error")).sum()) if exists else None,
                "missed": int((part == "pass").sum()) if exists else None,
                "recall": recall,
                "image_auroc": metrics.image_auroc,
                "pixel_auroc": metrics.pixel_auroc,
                "au_pro": metrics.au_pro,
                "notes": list(metrics.notes),
            }
        )
    return rows


def _categories(data: ReportData) -> dict[str, Any] | None:
    """Confusion matrix over categories, per-class precision/recall and ECE (models that classify)."""
    from flawscope.evaluate.supervised import category_metrics

    prediction = data.prediction
    if prediction is None or prediction.class_probs is None or not prediction.classes:
        return None
    return category_metrics(prediction.class_probs, list(data.defect_types), prediction.classes).to_dict()


def _segmentation(data: ReportData) -> dict[str, Any] | None:
    """Dice and IoU per class of the defect-probability maps (models that segment, with masks)."""
    from flawscope.evaluate.supervised import overlap_metrics

    prediction = data.prediction
    if (
        prediction is None
        or prediction.map_scale != "probability"
        or not prediction.maps
        or data.masks is None
    ):
        return None
    masks = [m if y == 1 else None for m, y in zip(data.masks, data.labels, strict=True)]
    if not any(m is not None and np.any(m) for m in masks):
        return None
    classes = prediction.classes or ("good", *sorted({t for t in data.defect_types if t != GOOD}))
    found = overlap_metrics(
        prediction.maps, prediction.class_maps or None, masks, list(data.defect_types), classes
    )
    return found.to_dict()


def _notes(data: ReportData, point: dict[str, Any]) -> list[str]:
    notes = []
    if not point["exists"]:
        notes.append(
            "No operating point: no thresholds were given and the test set cannot choose one (it needs "
            "good and defective parts), so there are no pass/fail outcomes, recall or false-reject rate "
            "here. Calibrate on held-out good parts ('flawscope calibrate') for a station's verdicts."
        )
    elif not point["calibrated"]:
        notes.append(
            f"No thresholds were given: the operating point is the lowest threshold with at most "
            f"{data.summary.overall.frr_target:.2%} false rejects on the good test parts, chosen on the test "
            "set itself. Its false-reject rate is optimistic; calibrate on held-out good parts before "
            "release."
        )
    if point["rules"]:
        notes.append(
            f"Outcomes in this report apply the station's rules ({', '.join(point['rules'])}) exactly as "
            "the line does"
            + (
                "."
                if data.maps is not None
                else "; without maps, a fail that needs a region becomes a review."
            )
        )
    if data.maps is None:
        notes.append("No anomaly maps: pixel metrics are undefined and the galleries show no heatmaps.")
    for note in data.summary.overall.notes:
        notes.append(f"Overall: {note}.")
    return notes


def build_content(data: ReportData, tiles: Mapping[str, Sequence[Tile]] | None = None) -> dict[str, Any]:
    """The report's content as JSON-ready data (the JSON twin).

    Args:
        data: the report's inputs.
        tiles: gallery tiles by gallery name (``"false_rejects"``, ``"missed_defects"``).

    Returns:
        Mapping with ``report``, ``dataset``, ``model``, ``counts``, ``operating_point``,
        ``calibration``, ``headline``, ``per_type``, ``metrics``, ``galleries`` and ``notes``.
    """
    overall = data.summary.overall
    point = point_content(data)
    per_type = _per_type(data, point)
    point = {k: v for k, v in point.items() if k != "outcomes"}
    calibration = data.calibration
    tiles = tiles or {}
    created = data.created_at or datetime.now(UTC).replace(microsecond=0).isoformat()
    totals = {"false_rejects": point["false_rejects"], "missed_defects": point["counts"]["defect"]["pass"]}
    if not point["exists"]:
        totals = {}  # the galleries show parts by their outcome
    if "segmentation" in tiles:
        totals["segmentation"] = int(np.sum(np.asarray(data.labels) == 1))
    content = {
        "report": {"generator": f"flawscope {flawscope.__version__}", "created_at": created, "format": 1},
        "dataset": data.dataset,
        "model": dict(data.model),
        "counts": {"images": len(data.paths), "good": overall.n_good, "defect": overall.n_defect},
        "operating_point": point,
        "calibration": None
        if calibration is None
        else {
            "target_frr": calibration.target_frr,
            "frr_upper_bound": calibration.frr_upper_bound,
            "n_calibration": calibration.n_calibration,
            "confidence": calibration.confidence,
        },
        "headline": {
            "image_auroc": overall.image_auroc,
            "pixel_auroc": overall.pixel_auroc,
            "au_pro": overall.au_pro,
            "recall": point["recall"],
            "frr": point["frr"],
            "frr_upper_bound": point["frr_upper_bound"],
            "false_rejects": point["false_rejects"],
            "n_good": overall.n_good,
        },
        "per_type": per_type,
        "categories": _categories(data),
        "segmentation": _segmentation(data),
        "detection": dict(data.detection) if data.detection else None,
        "metrics": data.summary.to_dict(),
        "galleries": {
            name: {"total": totals[name], "shown": [t.to_dict() for t in tiles.get(name, ())]}
            for name in totals
        },
        "notes": _notes(data, point),
    }
    cleaned: dict[str, Any] = _clean(content)
    return cleaned


def _tiles(data: ReportData, point: Mapping[str, Any]) -> tuple[dict[str, list[Tile]], HeatScale | None]:
    if not point["exists"]:
        return {}, None
    labels, scores = np.asarray(data.labels), np.asarray(data.scores)
    _, _, verdicts = decided(data)
    chosen = {
        "false_rejects": worst_good(scores, labels, GALLERY_SIZE),
        "missed_defects": worst_defects(scores, labels, GALLERY_SIZE),
    }
    probability = data.prediction is not None and data.prediction.map_scale == "probability"
    if probability and data.maps is not None:
        # Segmentation overlays: one defective part of each type in turn, predicted map and regions
        # (with their classes) over the true mask's outline.
        by_type: dict[str, list[int]] = {}
        for i in np.flatnonzero(labels == 1):
            by_type.setdefault(str(data.defect_types[int(i)]), []).append(int(i))
        picked: list[int] = []
        while len(picked) < GALLERY_SIZE and any(by_type.values()):
            for items in by_type.values():
                if items and len(picked) < GALLERY_SIZE:
                    picked.append(items.pop(0))
        chosen["segmentation"] = picked
    shown = (
        [np.asarray(data.maps[i]) for ids in chosen.values() for i in ids] if data.maps is not None else []
    )
    if probability:
        scale = HeatScale(0.0, 0.5, "defect-probability cut")
    else:
        scale = HeatScale.for_maps(shown, point["reject"])
    tiles = {
        name: make_tiles(
            ids,
            paths=data.paths,
            scores=scores,
            labels=labels,
            defect_types=data.defect_types,
            maps=data.maps,
            masks=data.masks,
            loader=data.loader,
            verdicts=verdicts,
            scale=scale,
        )
        for name, ids in chosen.items()
    }
    return tiles, scale


def _score_name(data: ReportData) -> str:
    """What the image score is: a trained head's defect probability or a good-parts anomaly score."""
    prediction = data.prediction
    trained = prediction is not None and (
        prediction.class_probs is not None or prediction.map_scale == "probability"
    )
    return "Image defect score" if trained else "Image anomaly score"


def _figures(data: ReportData, content: Mapping[str, Any]) -> dict[str, bytes | None]:
    point = content["operating_point"]
    labels, scores = np.asarray(data.labels), np.asarray(data.scores)
    if not point["exists"]:
        finite = scores[np.isfinite(scores)]
        # Every score equal (a classifier without a good class scores every part 1): nothing to draw.
        spread = finite.size > 0 and float(np.ptp(finite)) > 0.0
        return {
            "curves": None,
            "histogram": histogram_png(scores, labels, None, _score_name(data)) if spread else None,
        }
    marker = OperatingMarker(
        reject=point["reject"],
        review=point["review"],
        frr=point["frr"] or 0.0,
        recall=point["recall"] or 0.0,
        precision=point["precision"],
        label="operating point",
    )
    both = 0 < int(labels.sum()) < labels.size
    return {
        "curves": curves_png(scores, labels, marker, data.summary.overall.image_auroc) if both else None,
        "histogram": histogram_png(scores, labels, marker, _score_name(data)),
    }


def write_report(data: ReportData, html_path: str | Path) -> Path:
    """Write the validation report as HTML and its JSON twin beside it.

    Args:
        data: the report's inputs.
        html_path: the HTML file to write; the JSON goes to ``html_path.with_suffix(".json")``.

    Returns:
        The HTML file's path.

    Raises:
        InputError: when the folder cannot be written.
    """
    html_path = Path(html_path)
    point = point_content(data)
    tiles, scale = _tiles(data, point)
    content = build_content(data, tiles)
    figures = _figures(data, content)
    page = render_html(content, figures, tiles, scale if data.maps is not None else None)
    text = json.dumps(content, indent=2, allow_nan=False)
    try:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(page, encoding="utf-8")
        html_path.with_suffix(".json").write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise InputError(html_path, f"cannot write the report ({exc.strerror or exc})") from None
    return html_path


def build_report(run: EvaluationRun, bundle: Bundle, dataset_name: str, html_path: str | Path) -> Path:
    """Write the report of an evaluation run (what ``flawscope evaluate --report`` does).

    Args:
        run: the evaluation of a bundle on a test split.
        bundle: the evaluated bundle (for the model's name and backbone).
        dataset_name: the dataset's name.
        html_path: the HTML file to write (the JSON twin goes beside it).

    Returns:
        The HTML file's path.
    """
    manifest = bundle.manifest
    model = {
        "name": manifest.model.name,
        "backbone": manifest.backbone.name,
        "bundle_version": run.bundle_version,
        "model_hash": run.model_hash,
    }
    data = ReportData(
        dataset=dataset_name,
        model=model,
        paths=[s.path for s in run.samples],
        labels=np.array([s.label for s in run.samples]),
        defect_types=[s.defect_type for s in run.samples],
        scores=np.asarray(run.prediction.scores),
        summary=run.summary,
        maps=list(run.prediction.maps) or None,  # a classifier gives no maps
        masks=list(run.masks),
        thresholds=run.operating_point.thresholds if run.operating_point else None,
        prediction=run.prediction,
        detection=run.supervised.get("detection"),
    )
    return write_report(data, html_path)

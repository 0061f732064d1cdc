"""Cross-validation of a supervised model on labelled images: train per fold, pool the test scores.

``flawscope evaluate BUNDLE DATA --cv K`` and ``benchmarks/supervised.py`` run this. The features
are extracted once (:class:`~flawscope.features.cache.FeatureBank`) and every fold trains a new
head on its training images (and their augmented views); test images use their clean view only.
Scores pooled over the folds give image AP, AUROC and the recall at FRR <= 1% (threshold chosen
on the pooled good test parts, as for the anomaly benchmark); each fold also calibrates thresholds
on its own validation good parts, and the outcomes at those thresholds give an honest FRR and
recall (what a station would see). Segmenting models add pixel AUROC, Dice and IoU; classifying
ones the confusion matrix, per-class precision and recall, ECE and the defect-type accuracy;
detectors mAP@0.5.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from flawscope.data.preprocess import geometry_of
from flawscope.data.splits import Split
from flawscope.decide.calibration import calibrate
from flawscope.decide.verdict import decide_many, outcomes
from flawscope.evaluate.metrics import evaluate_scores
from flawscope.evaluate.supervised import category_metrics, detection_map, overlap_metrics
from flawscope.features.cache import FeatureBank
from flawscope.models.boxes import boxes_from_regions
from flawscope.models.supervised import SupervisedModel
from flawscope.types import Targets

log = logging.getLogger(__name__)


def cross_validate(
    base: SupervisedModel,
    images: Sequence[np.ndarray],
    targets: Targets,
    folds: Sequence[Split],
    bank: FeatureBank,
    extract_seconds: float = 0.0,
    name: str = "",
    save: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Train ``base``'s configuration on each fold and measure it on the fold's test images.

    Args:
        base: a model whose classes and preprocessing are set (:meth:`SupervisedModel.make_bank`).
        images: every image (only their shapes are read here).
        targets: their labels (masks, boxes).
        folds: the splits; their ``test`` sides are pooled.
        bank: the images' cached features (clean view first, then augmented views).
        extract_seconds: time the bank took, to report a training run's full cost.
        name: label for log lines.
        save: a folder to save each fold's fitted model in (``fold<k>``, a trained bundle), for
            exporting or inspecting it later; ``None`` saves nothing.

    Returns:
        JSON-ready metrics, pooled and per fold.
    """
    cls = type(base)
    params = base.hyperparameters()
    task = str(cls.task)
    pre = base.preprocessing_
    assert pre is not None
    geometries = [geometry_of(im.shape, pre) for im in images]
    n = len(images)
    labels = np.array([0 if c == "good" else 1 for c in targets.classes])
    pooled: dict[str, Any] = {
        "score": np.full(n, np.nan),
        "probs": None,
        "maps": [None] * n,
        "class_maps": [None] * n,
        "calibrated": np.array([""] * n, dtype=object),
    }
    fold_rows = []
    boxes_pred: list[Any] = [[] for _ in range(n)]
    for fold, split in enumerate(folds):
        model = cls(**params)
        model.classes_, model.preprocessing_, model.runner_ = base.classes_, pre, None
        assert isinstance(model, SupervisedModel)
        t2, c2 = time.perf_counter(), time.process_time()
        model.fit_bank(bank, targets, list(split.train), list(split.validation), geometries=geometries)
        fit_s, fit_cpu = time.perf_counter() - t2, time.process_time() - c2
        if save is not None:
            from flawscope.models.io import save_model

            save_model(model, Path(save) / f"fold{fold}")
        test = np.array(split.test)
        t3 = time.perf_counter()
        pred = model.predict_bank(bank, bank.rows(test, views=False), [geometries[i] for i in test])
        predict_s = time.perf_counter() - t3
        # rows come back in bank order (clean views are stored in image order)
        pooled["score"][test] = pred.scores
        if pred.class_probs is not None:
            if pooled["probs"] is None:
                pooled["probs"] = np.zeros((n, pred.class_probs.shape[1]), np.float32)
            pooled["probs"][test] = pred.class_probs
        for j, i in enumerate(test):
            if pred.maps:
                pooled["maps"][i] = pred.maps[j]
            if pred.class_maps:
                pooled["class_maps"][i] = pred.class_maps[j]
            if task == "detect":
                # A box head's own boxes, else the regions of a segmenter's class map.
                boxes_pred[i] = (
                    list(pred.boxes[j])
                    if pred.boxes
                    else boxes_from_regions(pred.maps[j], pred.class_maps[j], model.classes_)
                )
        # The fold's validation images: a criterion to choose configurations by (never the test
        # folds), and a station's operating point (thresholds calibrated on the validation good parts).
        val = list(split.validation)
        vscores = (
            model.predict_bank(bank, bank.rows(val, views=False), [geometries[i] for i in val]).scores
            if val
            else np.zeros(0)
        )
        validation = validation_metrics(vscores, labels[val])
        val_good = vscores[labels[val] == 0]
        calibration: dict[str, Any] = {}
        if len(val_good) >= 10 and "good" in model.classes_:
            cal = calibrate(val_good, target_frr=0.01, require_bound=False)
            pooled["calibrated"][test] = outcomes(decide_many(pred, cal.thresholds, regions=False))
            # The fold's few good parts bound the FRR they can show: kept to read the FRR above by.
            calibration = {"n_calibration": len(val_good), "calibration_frr_bound": cal.frr_upper_bound}
        log_ = model.training_["log"]
        box_log = log_.get("box_head")
        n_train_images = len(split.train)
        fold_rows.append(
            {
                "fold": fold,
                "n_train": n_train_images,
                "n_validation": len(split.validation),
                "n_test": len(test),
                "fit_seconds": round(fit_s, 1),
                "fit_cpu_seconds": round(fit_cpu, 1),
                "load_average": [round(v, 2) for v in os.getloadavg()],
                "predict_seconds": round(predict_s, 2),
                "training_run_seconds": round(fit_s + extract_seconds * n_train_images / n, 1),
                "epochs_run": log_["epochs_run"],
                "best_epoch": log_["best_epoch"],
                "temperature": log_["temperature"],
                "ece_validation_after": log_["ece_after"],
                **validation,
                **calibration,
                **({"box_head": box_log} if box_log else {}),
            }
        )
        log.info(
            "%s fold %d: fit %.0f s, epochs %d (best %d)",
            name,
            fold,
            fit_s,
            log_["epochs_run"],
            log_["best_epoch"],
        )
        del model
    n_views = int(bank.view.max()) + 1
    criteria = [r["validation_pauroc"] for r in fold_rows if r.get("validation_pauroc") is not None]
    tested = np.flatnonzero(~np.isnan(pooled["score"]))
    y, s = labels[tested], pooled["score"][tested]
    result: dict[str, Any] = {
        "task": task,
        "model": cls.name,
        "n_images": n,
        "n_tested": len(tested),
        "folds": len(folds),
        "split": [folds[0].method, folds[0].by_group],
        "views": n_views,
        "extract_seconds": round(extract_seconds, 1),
        "per_fold": fold_rows,
        "canvas": [pre.height, pre.width],
        "validation_pauroc_mean": float(np.mean(criteria)) if criteria else None,
    }
    classes = list(base.classes_)
    if 0 < y.sum() < len(y):
        masks = [targets.masks[i] if targets.masks else None for i in tested]
        has_maps = all(pooled["maps"][i] is not None for i in tested) and any(
            m is not None and m.any() for m in masks
        )
        types = [targets.classes[i] if labels[i] else "good" for i in tested]
        summary = evaluate_scores(
            s,
            y,
            types,
            maps=[pooled["maps"][i] for i in tested] if has_maps else None,
            masks=[
                m if m is not None else np.zeros(pooled["maps"][i].shape, bool)
                for i, m in zip(tested, masks, strict=True)
            ]
            if has_maps
            else None,
        )
        m = summary.overall
        cal = pooled["calibrated"][tested]
        result.update(
            {
                "image_ap": float(average_precision_score(y, s)),
                "image_auroc": float(roc_auc_score(y, s)),
                "recall_at_1pct_frr": m.recall_at_frr,
                "achieved_frr": m.achieved_frr,
                "pixel_auroc": m.pixel_auroc,
                "au_pro": m.au_pro,
                "per_type_image_auroc": {k: v.image_auroc for k, v in summary.per_type.items()},
                "per_type_pixel_auroc": {k: v.pixel_auroc for k, v in summary.per_type.items()},
                # the defects of each type below the pooled threshold (the same goods set it)
                "missed_at_frr_by_type": {
                    k: round(v.n_defect * (1.0 - v.recall_at_frr))
                    for k, v in summary.per_type.items()
                    if v.recall_at_frr is not None
                },
            }
        )
        if (cal != "").all():
            result["calibrated"] = {
                "frr": float((cal[y == 0] == "fail").mean()),
                "recall": float((cal[y == 1] == "fail").mean()),
                "review_rate": float((cal == "review").mean()),
                "n_calibration": [r["n_calibration"] for r in fold_rows],
                "frr_upper_bound": [r["calibration_frr_bound"] for r in fold_rows],
            }
        if has_maps:
            over = overlap_metrics(
                [pooled["maps"][i] for i in tested],
                [pooled["class_maps"][i] for i in tested]
                if pooled["class_maps"][tested[0]] is not None
                else None,
                masks,
                [targets.classes[i] for i in tested],
                classes,
            )
            result["dice"], result["iou"] = over.dice, over.iou
    if pooled["probs"] is not None:
        probs = pooled["probs"][tested]
        truth = [targets.classes[i] for i in tested]
        cm = category_metrics(probs, truth, classes)
        result["category"] = cm.to_dict()
        defect_cols = [k for k, c in enumerate(classes) if c != "good"]
        bad = [j for j, i in enumerate(tested) if labels[i] == 1]
        if len(defect_cols) > 1 and bad:
            guess = [classes[defect_cols[int(np.argmax(probs[j, defect_cols]))]] for j in bad]
            result["defect_type_accuracy"] = float(
                np.mean([g == truth[j] for g, j in zip(guess, bad, strict=True)])
            )
    if task == "detect":
        result["detection"] = detection_map(
            [boxes_pred[i] for i in tested], [targets.boxes[i] for i in tested], classes
        )
    return result


def validation_metrics(scores: np.ndarray, defective: np.ndarray, max_fpr: float = 0.05) -> dict[str, Any]:
    """How well a fold's validation images rank: the criterion configurations are chosen by.

    Args:
        scores: ``(N,)`` image scores of the fold's validation images.
        defective: ``(N,)`` 1 for a defective image, 0 for a good one.
        max_fpr: the partial AUROC's false-reject limit.

    Returns:
        ``validation_pauroc``: the standardised partial AUROC up to ``max_fpr`` (McClish; 0.5 is
        chance, 1 perfect), ``None`` with one class only; ``validation_recall_above_good``: the
        share of validation defects scoring above every validation good part.
    """
    y = np.asarray(defective).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    if len(y) == 0 or y.min() == y.max():
        return {"validation_pauroc": None, "validation_recall_above_good": None}
    return {
        "validation_pauroc": float(roc_auc_score(y, s, max_fpr=max_fpr)),
        "validation_recall_above_good": float((s[y == 1] > s[y == 0].max()).mean()),
    }


def cross_validate_bundle(
    bundle_path: str | os.PathLike[str],
    data: str | os.PathLike[str],
    folds: int,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """``flawscope evaluate BUNDLE DATA --cv K``: K-fold cross-validation of the bundle's configuration.

    The bundle's model class and hyperparameters are trained anew on each fold of DATA (stratified,
    by group with the bundle's group pattern); the bundle itself is not changed.

    Raises:
        InputError: for a bundle of a good-parts model, or labelled data that cannot be split.
    """
    from flawscope.bundle import read_bundle
    from flawscope.data.labelled import check_labelled, load_labelled
    from flawscope.data.splits import kfold
    from flawscope.errors import InputError
    from flawscope.models.registry import get_model_class
    from flawscope.models.train_supervised import read_labelled

    manifest = read_bundle(bundle_path).manifest
    if manifest.training.task is None:
        raise InputError(
            "--cv",
            "cross-validation retrains a model trained on labels; this bundle's learns from good parts",
        )
    cls = get_model_class(manifest.model.name)
    labels = dict(manifest.training.labels or {})
    labelled = load_labelled(data, labels.get("group_pattern"))
    task = cls.task
    check_labelled(labelled, task)
    splits = kfold(labelled.samples, folds, seed=seed)
    loaded = read_labelled(labelled.samples, masks=bool(getattr(cls, "segments", False)))
    if loaded.skipped:
        raise InputError(loaded.skipped[0][0], f"cannot be read for cross-validation: {loaded.skipped[0][1]}")
    base = cls(**cls.saved_params(dict(manifest.model.hyperparameters)))
    assert isinstance(base, SupervisedModel)
    start = time.perf_counter()
    bank = base.make_bank(loaded.images, loaded.targets, list(range(len(loaded.images))), progress)
    result = cross_validate(
        base, loaded.images, loaded.targets, splits, bank, time.perf_counter() - start, labelled.name
    )
    return {"dataset": labelled.root, "bundle": str(bundle_path), **result}

"""Supervised models on the real datasets (issue 13): one table, JSON in benchmarks/results/.

    python benchmarks/supervised.py [--datasets kolektorsdd,magnetic_tile,neu_surface,elpv]
                                    [--mixed] [--cache DIR] [--out benchmarks/results/supervised.json]

Protocols (fixed before any run; hyperparameters are the models' defaults, none chosen on test folds):

* kolektorsdd: all 383 images, 3 folds stratified by ``kosNN`` (no part on both sides), segmenter.
* magnetic_tile: the 583 test images in 5 stratified folds; ``train/good`` is always trained on;
  segmenter (5 defect classes).
* neu_surface: its ``splits.csv``; classifier (6 classes) and box_detector (VOC boxes, mAP@0.5;
  ``--detector detector`` for the boxes from a box-mask segmenter's regions).
* elpv (``pip install elpv-dataset``): defective when the labelled probability >= 0.5; a stratified
  75/25 split with seed 0 (``data.splits.holdout``), its test indices written to the JSON.
* ``--mixed``: kolektorsdd, model ``mixed``, with 0 / 5 / 10 / 20 / all labelled defective images
  (with masks) per training fold, and all of them with image labels only.

Features are extracted once per dataset (the clean image and one augmented view) and reused by
every fold; test images only ever use their clean view. Each fold trains a new head. Recall at
FRR <= 1% is computed on the scores pooled over folds (the anomaly benchmark's metric), and also
at thresholds calibrated per fold on that fold's validation good images (what a station would do).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("FLAWSCOPE_DATASETS", HERE.parent.parent / "shared" / "datasets"))
TASK_MODEL = {"segment": "segmenter", "classify": "classifier", "detect": "box_detector", "mixed": "mixed"}


def load(name: str) -> tuple[list[Any], list[np.ndarray], Any]:
    """Samples, images and targets of a dataset (ELPV from its PyPI package)."""
    from flawscope.data.labelled import LabelledSample, load_labelled
    from flawscope.models.train_supervised import read_labelled
    from flawscope.types import Targets

    if name == "elpv":
        from elpv_dataset.utils import load_dataset as load_elpv

        images, probs, _ = load_elpv()
        classes = tuple("defective" if p >= 0.5 else "good" for p in probs)
        samples = [LabelledSample(f"elpv/{i:04d}", c) for i, c in enumerate(classes)]
        # The labelled probabilities (0, 1/3, 2/3, 1) ride along for ``soft_labels``.
        targets = Targets(classes, probabilities=tuple(float(p) for p in probs))
        return samples, [np.ascontiguousarray(im) for im in images], targets
    pattern = r"kos\d+" if name == "kolektorsdd" else None
    labelled = load_labelled(SHARED / name, pattern)
    loaded = read_labelled(labelled.samples)
    assert not loaded.skipped, loaded.skipped
    return loaded.samples, loaded.images, loaded.targets


def splits(name: str, samples: list[Any]) -> list[Any]:
    from flawscope.data.splits import fixed, holdout, kfold

    if name == "kolektorsdd":
        return kfold(samples, 3, seed=0)
    if name == "magnetic_tile":
        among = [i for i, s in enumerate(samples) if s.split == "test"]
        return kfold(samples, 5, seed=0, among=among)
    if name == "neu_surface":
        return [fixed(samples, seed=0)]
    outer = holdout(samples, 0.25, seed=0)  # elpv: the written-down 75/25 split
    inner = holdout([samples[i] for i in outer.train], 0.15, seed=0)
    from flawscope.data.splits import Split

    train = tuple(outer.train[i] for i in inner.train)
    val = tuple(outer.train[i] for i in inner.validation)
    return [Split(train, val, outer.validation, "stratified 75/25 hold-out + 15% validation", 0)]


def recall_at_frr(scores: np.ndarray, labels: np.ndarray, frr: float = 0.01) -> float:
    """Recall at the lowest threshold with at most ``frr`` of the good scores at or above it."""
    from flawscope.evaluate.metrics import evaluate_scores

    types = ["good" if y == 0 else "defect" for y in labels]
    return float(evaluate_scores(scores, labels, types, frr=frr).overall.recall_at_frr or 0.0)


def pooled_metrics(validation_pauroc: list[float], scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """A configuration's criterion (the mean of its folds' validation pAUROC) and pooled test figures."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    recall = recall_at_frr(scores, labels)
    return {
        "validation_pauroc": list(validation_pauroc),
        "validation_pauroc_mean": float(np.mean(validation_pauroc)),
        "image_auroc": float(roc_auc_score(labels, scores)),
        "image_ap": float(average_precision_score(labels, scores)),
        "recall_at_1pct_frr": recall,
        "missed": round((1 - recall) * int(np.sum(labels))),
    }


def pooled_line(name: str, row: dict[str, Any]) -> str:
    """One table line of :func:`pooled_metrics`: name | criterion (per fold) | AUROC | AP | recall."""
    folds = "/".join(f"{v:.3f}" for v in row["validation_pauroc"])
    return (
        f"{name} | {row['validation_pauroc_mean']:.4f} ({folds}) | {row['image_auroc']:.4f} | "
        f"{row['image_ap']:.4f} | {row['recall_at_1pct_frr']:.3f}"
    )


def bank_key(model: Any) -> str:
    """A short hash of what changes a feature bank: the trunk, the canvas, the augmented views.

    Cached banks are named by it, so a run with another backbone, canvas, ``views`` or
    ``fine_level`` extracts its own features instead of reading another configuration's.
    """
    import dataclasses
    import hashlib

    config = dataclasses.asdict(model.config)
    for ignored in ("engine", "batch_size", "score_area"):  # same features either way
        config.pop(ignored, None)
    spec = model.augment_spec().to_dict()
    key = {"config": config, "augment": spec, "finetune": model.params.get("finetune")}
    if model.params.get("fine_level"):  # absent when off: the banks cached before keep their names
        key["fine_level"] = True
    text = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def run_dataset(
    name: str, task: str, cache: Path | None, extra: dict[str, Any], save: Path | None = None
) -> dict[str, Any]:
    import torch

    from flawscope.evaluate.crossval import cross_validate
    from flawscope.features.cache import FeatureBank
    from flawscope.models import get_model_class

    torch.set_num_threads(1)
    t0, c0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()
    samples, images, targets = load(name)
    folds = splits(name, samples)
    cls = get_model_class(TASK_MODEL[task])
    params = {"engine": "auto", **extra}
    base = cls(**params)
    read_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    cache_file = cache / f"{name}-{task}-{bank_key(base)}-bank.safetensors" if cache else None
    everything = list(range(len(images)))
    if cache_file is not None and cache_file.is_file():
        bank = FeatureBank.load(cache_file)
        base.classes_ = base._classes_for(targets)
        base.preprocessing_ = base._make_preprocessing(images)
        base.runner_ = None
    else:
        bank = base.make_bank(images, targets, everything)
        if cache_file is not None:
            bank.save(cache_file, name)
    extract_s = time.perf_counter() - t1
    kept = save / f"{name}-{task}" if save is not None else None
    result = cross_validate(base, images, targets, folds, bank, extract_s, name, save=kept)
    result = {"dataset": name, "read_seconds": round(read_s, 1), **result, "params": params}
    if name == "elpv":
        result["elpv_test_indices"] = [int(i) for i in folds[0].test]
    result["total_seconds"] = round(time.perf_counter() - t0, 1)
    result["total_cpu_seconds"] = round(time.process_time() - c0, 1)
    result["load_average_before"], result["load_average_after"] = load0, os.getloadavg()
    wall, cpu = result["total_seconds"], result["total_cpu_seconds"]
    print(f"  {name}/{task}: {wall:.0f} s wall, {cpu:.0f} s CPU", flush=True)
    return result


def run_mixed(cache: Path | None, counts: list[int | str]) -> list[dict[str, Any]]:
    """Mixed supervision on kolektorsdd: recall at FRR <= 1% against the number of labelled defects."""
    import torch
    from sklearn.metrics import average_precision_score, roc_auc_score

    from flawscope.data.preprocess import geometry_of
    from flawscope.features.cache import FeatureBank
    from flawscope.models import get_model_class
    from flawscope.types import Targets

    torch.set_num_threads(1)
    samples, images, targets = load("kolektorsdd")
    folds = splits("kolektorsdd", samples)
    cls = get_model_class("mixed")
    base = cls(engine="auto")
    cache_file = cache / "kolektorsdd-mixed-bank.safetensors" if cache else None
    if cache_file is not None and cache_file.is_file():
        bank = FeatureBank.load(cache_file)
        base.classes_, base.preprocessing_ = base._classes_for(targets), base._make_preprocessing(images)
    else:
        bank = base.make_bank(images, targets, list(range(len(images))))
        if cache_file is not None:
            bank.save(cache_file, "kolektorsdd-mixed")
    pre = base.preprocessing_
    assert pre is not None
    geometries = [geometry_of(im.shape, pre) for im in images]
    labels = np.array([0 if c == "good" else 1 for c in targets.classes])
    rows = []
    for count in counts:
        masks_too = count != "all-image-labels"
        scores = np.full(len(images), np.nan)
        seconds = []
        for fold, split in enumerate(folds):
            rng = np.random.default_rng(fold)
            defects = [i for i in split.train if labels[i] == 1]
            keep = (
                defects
                if count in ("all", "all-image-labels")
                else sorted(rng.permutation(defects)[: int(count)])
            )
            train = [i for i in split.train if labels[i] == 0 or i in set(keep)]
            val = [i for i in split.validation if labels[i] == 0]
            masks = tuple(m if (masks_too or labels[i] == 0) else None for i, m in enumerate(targets.masks))
            fold_targets = Targets(targets.classes, masks, (), targets.groups)
            fold_bank = bank
            if not masks_too:
                from flawscope.features.cache import UNKNOWN

                cells = bank.cells.clone()
                cells[np.isin(bank.image, np.flatnonzero(labels == 1))] = UNKNOWN
                fold_bank = FeatureBank(bank.features, bank.valid, cells, bank.image, bank.view)
            model = cls(engine="auto")
            model.classes_, model.preprocessing_, model.runner_ = base.classes_, pre, None
            start = time.perf_counter()
            model.fit_bank(fold_bank, fold_targets, train, val)
            seconds.append(time.perf_counter() - start)
            test = np.array(split.test)
            pred = model.predict_bank(bank, bank.rows(test, views=False), [geometries[i] for i in test])
            scores[test] = pred.scores
        y = labels
        rows.append(
            {
                "labelled_defects_per_fold": count,
                "with_masks": masks_too,
                "image_ap": float(average_precision_score(y, scores)),
                "image_auroc": float(roc_auc_score(y, scores)),
                "recall_at_1pct_frr": recall_at_frr(scores, y),
                "fit_seconds": [round(v, 1) for v in seconds],
            }
        )
        print(
            f"  mixed {count}: recall@1% {rows[-1]['recall_at_1pct_frr']:.3f}, AP {rows[-1]['image_ap']:.4f}",
            flush=True,
        )
    return rows


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="kolektorsdd,magnetic_tile,neu_surface,elpv")
    parser.add_argument(
        "--mixed", action="store_true", help="also the mixed-supervision ladder on kolektorsdd"
    )
    parser.add_argument(
        "--cache", default=os.environ.get("FLAWSCOPE_BENCH_CACHE", "/tmp/flawscope-bench-cache")
    )
    parser.add_argument("--out", default=str(HERE / "results" / "supervised.json"))
    parser.add_argument("--param", action="append", default=[], help="KEY=JSON model hyperparameter")
    parser.add_argument("--tasks", default="", help="only these tasks (e.g. classify), default all")
    parser.add_argument("--save", default=None, help="save each fold's model as DIR/<dataset>-<task>/fold<k>")
    parser.add_argument(
        "--detector", default=TASK_MODEL["detect"], help="the detect task's model (detector, box_detector)"
    )
    parser.add_argument(
        "--counts", default="0,5,10,20,all,all-image-labels", help="rungs of the --mixed ladder"
    )
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cache = Path(args.cache) if args.cache else None
    TASK_MODEL["detect"] = args.detector
    extra = {k: json.loads(v) for k, _, v in (p.partition("=") for p in args.param)}
    plan = {
        "kolektorsdd": ["segment"],
        "magnetic_tile": ["segment"],
        "neu_surface": ["classify", "detect"],
        "elpv": ["classify"],
    }
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    load_before = os.getloadavg()
    results = []
    for name in filter(None, args.datasets.split(",")):  # --datasets '' --mixed: the ladder only
        for task in [t for t in plan[name] if not args.tasks or t in args.tasks.split(",")]:
            print(f"{name} / {task} ...", flush=True)
            results.append(run_dataset(name, task, cache, extra, Path(args.save) if args.save else None))
    counts: list[int | str] = [int(c) if c.isdigit() else c for c in args.counts.split(",")]
    mixed = run_mixed(cache, counts) if args.mixed else None
    header = (
        "dataset",
        "task",
        "AP",
        "AUROC",
        "recall@FRR1%",
        "pixAUROC",
        "Dice(all)",
        "category acc",
        "defect-type acc",
        "ECE",
        "mAP@0.5",
        "val pAUROC@5%",
        "fold fit s",
        "extract s",
        "total s",
    )
    print(" | ".join(header))
    for r in results:
        cat = r.get("category") or {}
        print(
            " | ".join(
                [
                    r["dataset"],
                    r["task"],
                    _fmt(r.get("image_ap"), 4),
                    _fmt(r.get("image_auroc"), 4),
                    _fmt(r.get("recall_at_1pct_frr")),
                    _fmt(r.get("pixel_auroc"), 4),
                    _fmt((r.get("dice") or {}).get("all")),
                    _fmt(cat.get("accuracy"), 4),
                    _fmt(r.get("defect_type_accuracy"), 4),
                    _fmt(cat.get("ece")),
                    _fmt((r.get("detection") or {}).get("map")),
                    _fmt(r.get("validation_pauroc_mean"), 4),
                    "/".join(str(f["fit_seconds"]) for f in r["per_fold"]),
                    _fmt(r["extract_seconds"], 0),
                    _fmt(r["total_seconds"], 0),
                ]
            )
        )
    if mixed:
        for row in mixed:
            print(
                f"mixed kolektorsdd {row['labelled_defects_per_fold']}: "
                f"recall@1% {row['recall_at_1pct_frr']:.3f} AP {row['image_ap']:.4f}"
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": "python benchmarks/supervised.py " + " ".join(f"{k}={v}" for k, v in vars(args).items()),
        "started": started,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "gpu": None},
        "results": results,
        "mixed": mixed,
    }
    out.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

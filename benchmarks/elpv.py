"""ELPV solar cells: the classifier as ``flawscope train --task classify`` trains it (issue 13).

    python benchmarks/elpv.py [--param KEY=JSON ...] [--backbone efficientnet_lite0]
                              [--image-size 256] [--out benchmarks/results/elpv.json]

``--write-csv DIR`` writes the cells and ``DIR/labels.csv`` (``path,label,split``, the same test
split) so that the CLI trains the same model: ``flawscope train DIR/labels.csv --task classify
-o BUNDLE --param finetune=last ...`` (the test rows are never trained on).

The data (``pip install elpv-dataset``): 2,624 cells of 300 x 300 px, defective when the labelled
probability is >= 0.5. The split is the one written down in ``benchmarks/supervised.py``: a
stratified 75/25 hold-out with seed 0 (656 test cells, their indices in the JSON), and 15% of
the 75% training part (stratified, seed 0) as the validation split that early stopping, the
temperature and every fine-tuning choice see. **The 25% test part is only predicted, once, at
the end**: no setting is chosen on it.

One :class:`flawscope.models.supervised.Classifier` is fitted with the given hyperparameters
(``--param finetune="last"``, ``--param views=4`` ...) on the training part, exactly as the CLI
fits it, and predicts the test part; the table row gives accuracy, AUROC, AP and ECE, the
training time (wall and CPU) and the load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def write_csv(folder: Path) -> None:
    """The cells as PNG files and ``labels.csv`` with the written-down split, for ``flawscope train``."""
    import csv

    import cv2

    sys.path.insert(0, str(HERE))
    from supervised import load, splits

    samples, images, targets = load("elpv")
    test = {int(i) for i in splits("elpv", samples)[0].test}
    (folder / "cells").mkdir(parents=True, exist_ok=True)
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for i, (image, cls) in enumerate(zip(images, targets.classes, strict=True)):
            name = f"cells/{i:04d}.png"
            cv2.imwrite(str(folder / name), image)
            writer.writerow([name, cls, "test" if i in test else "train"])
    print(f"{len(images)} cells ({len(test)} test) -> {folder / 'labels.csv'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--param", action="append", default=[], help="KEY=JSON model hyperparameter")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--out", default=str(HERE / "results" / "elpv.json"))
    parser.add_argument(
        "--subset",
        type=float,
        default=None,
        metavar="FRACTION",
        help="smoke run: keep this random fraction (seed 0) of the train, validation and test parts",
    )
    parser.add_argument(
        "--write-csv",
        metavar="DIR",
        help="only write the cells as PNG files and DIR/labels.csv (path,label,split) for the CLI",
    )
    args = parser.parse_args()
    if args.write_csv:
        write_csv(Path(args.write_csv))
        return

    import torch
    from sklearn.metrics import average_precision_score, roc_auc_score

    from flawscope.evaluate.supervised import category_metrics
    from flawscope.models import get_model_class
    from flawscope.types import Targets

    sys.path.insert(0, str(HERE))
    from supervised import load, splits  # the same data and split as the main benchmark

    started, load0 = dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), os.getloadavg()
    samples, images, targets = load("elpv")
    split = splits("elpv", samples)[0]
    parts = [[int(i) for i in part] for part in (split.train, split.validation, split.test)]
    if args.subset is not None:  # a smoke run of the whole pipeline: its accuracy means nothing
        rng = np.random.default_rng(0)
        parts = [sorted(rng.permutation(part)[: max(8, round(len(part) * args.subset))].tolist())
                 for part in parts]  # fmt: skip
    train = sorted([*parts[0], *parts[1]])
    validation = set(parts[1])
    test = parts[2]
    params: dict[str, Any] = {"backbone": args.backbone, "image_size": args.image_size}
    params |= {k: json.loads(v) for k, _, v in (p.partition("=") for p in args.param)}
    model = get_model_class("classifier")(**params)
    t0, c0 = time.perf_counter(), time.process_time()

    def progress(stage: str, done: int, total: int) -> None:
        if done == total or done % max(1, total // 4) == 0:
            print(f"  {stage}: {done}/{total} at {time.perf_counter() - t0:.0f} s", flush=True)

    model.fit(
        [images[i] for i in train],
        Targets(tuple(targets.classes[i] for i in train)),
        progress,
        validation_index=[k for k, i in enumerate(train) if i in validation],
    )
    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    t1 = time.perf_counter()
    pred = model.predict([images[i] for i in test])
    predict_s = time.perf_counter() - t1
    truth = [targets.classes[i] for i in test]
    assert pred.class_probs is not None
    cm = category_metrics(pred.class_probs, truth, pred.classes)
    y = np.array([c != "good" for c in truth])
    result = {
        "command": "python benchmarks/elpv.py "
        + " ".join(f"--param {p}" for p in args.param)
        + f" --backbone {args.backbone} --image-size {args.image_size}"
        + (f" --subset {args.subset}" if args.subset is not None else ""),
        "started": started,
        "hyperparameters": model.hyperparameters(),
        "accuracy": cm.accuracy,
        "image_auroc": float(roc_auc_score(y, pred.scores)),
        "image_ap": float(average_precision_score(y, pred.scores)),
        "ece": cm.to_dict().get("ece"),
        "category": cm.to_dict(),
        "canvas": [model.preprocessing_.height, model.preprocessing_.width] if model.preprocessing_ else None,
        "training": model.training_,  # its log holds the fine-tuning epochs
        "fit_seconds": round(fit_s, 1),
        "fit_cpu_seconds": round(fit_cpu, 1),
        "predict_seconds": round(predict_s, 1),
        "threads": torch.get_num_threads(),
        "load_average_before": load0,
        "load_average_after": os.getloadavg(),
        "n_train": len(train) - len(validation),
        "n_validation": len(validation),
        "elpv_test_indices": test,
    }
    print(
        f"elpv classifier {args.param} {args.backbone}@{args.image_size}: accuracy {cm.accuracy:.4f} "
        f"AUROC {result['image_auroc']:.4f} AP {result['image_ap']:.4f} ECE {result['ece']} "
        f"fit {fit_s:.0f} s wall / {fit_cpu:.0f} s CPU, load {load0[0]:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()

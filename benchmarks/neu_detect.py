"""NEU-DET boxes: a ``box_detector`` trained as ``flawscope train --task detect`` trains it (issue 13).

    python benchmarks/neu_detect.py [--param KEY=JSON ...] [--save BUNDLE]
                                    [--out benchmarks/results/neu_detect.json]

``benchmarks/supervised.py`` trains heads on one cached feature bank, so it cannot measure a
model whose trunk is fine-tuned (``--param finetune="last"``); this script fits one model on
neu_surface's ``splits.csv`` with ``fit`` (training images, the validation images as the
``validation_index`` that chooses every epoch, never a test image) and predicts the 360 test
images once: mAP@0.5 and AP per class in image pixels, the image head's accuracy, the training
time (wall and CPU, the fine-tuning's own share) and the load average.
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

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--param", action="append", default=[], help="KEY=JSON model hyperparameter")
    parser.add_argument("--save", default=None, help="save the trained bundle here")
    parser.add_argument("--out", default=str(HERE / "results" / "neu_detect.json"))
    parser.add_argument("--subset", type=float, default=None, help="smoke run: this fraction of each part")
    args = parser.parse_args()
    import torch

    from flawscope.evaluate.supervised import category_metrics, detection_map
    from flawscope.models import get_model_class
    from flawscope.types import Targets

    sys.path.insert(0, str(HERE))
    from supervised import load, splits  # the same data and split as the main benchmark

    started, load0 = dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), os.getloadavg()
    samples, images, targets = load("neu_surface")
    split = splits("neu_surface", samples)[0]
    parts = [list(split.train), list(split.validation), list(split.test)]
    if args.subset is not None:  # a smoke run of the whole pipeline: its mAP means nothing
        parts = [part[:: max(1, round(1 / args.subset))] for part in parts]
    train = sorted([*parts[0], *parts[1]])
    validation = set(parts[1])
    test = parts[2]
    params: dict[str, Any] = {k: json.loads(v) for k, _, v in (p.partition("=") for p in args.param)}
    model = get_model_class("box_detector")(**params)
    t0, c0 = time.perf_counter(), time.process_time()

    def progress(stage: str, done: int, total: int) -> None:
        if done == total:
            print(f"  {stage}: {done}/{total} at {time.perf_counter() - t0:.0f} s", flush=True)

    model.fit(
        [images[i] for i in train],
        Targets(tuple(targets.classes[i] for i in train), (), tuple(targets.boxes[i] for i in train)),
        progress,
        validation_index=[k for k, i in enumerate(train) if i in validation],
    )
    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    if args.save:
        from flawscope.models.io import save_model

        save_model(model, args.save)
    pred = model.predict([images[i] for i in test])
    found = detection_map(pred.boxes, [targets.boxes[i] for i in test], model.classes_)
    assert pred.class_probs is not None
    category = category_metrics(pred.class_probs, [targets.classes[i] for i in test], pred.classes)
    tuned = model.training_.get("log", {}).get("finetune")
    result = {
        "command": "python benchmarks/neu_detect.py " + " ".join(f"--param {p}" for p in args.param),
        "started": started,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "hyperparameters": model.hyperparameters(),
        "map": found["map"],
        "ap": found["ap"],
        "accuracy": category.accuracy,
        "finetune": tuned,
        "box_log": model.training_["log"].get("box_head"),
        "fit_seconds": round(fit_s, 1),
        "fit_cpu_seconds": round(fit_cpu, 1),
        "threads": torch.get_num_threads(),
        "load_average_before": load0,
        "load_average_after": os.getloadavg(),
        "n_train": len(train) - len(validation),
        "n_validation": len(validation),
        "n_test": len(test),
    }
    curve = (tuned or {}).get("validation_map") or (result["box_log"] or {}).get("validation_map") or [0.0]
    print(
        f"neu box_detector {args.param}: test mAP@0.5 {found['map']:.4f} (validation best {max(curve):.4f}), "
        f"accuracy {category.accuracy:.4f}, fit {fit_s:.0f} s wall / {fit_cpu:.0f} s CPU, "
        f"load {load0[0]:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()

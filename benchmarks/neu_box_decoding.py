"""NEU-DET: a trained ``box_detector``'s in-graph decoding options, on cached features (issue 13).

    python benchmarks/neu_box_decoding.py BUNDLE [--cache DIR] [--smooth 1,3,5] [--vote 1,0.5,0.6,0.7]
                                          [--out benchmarks/results/neu_box_decoding.json]

BUNDLE is a saved ``box_detector`` (``benchmarks/supervised.py --save DIR`` writes
``DIR/neu_surface-detect/fold0``); its trunk features are read from the bank that
``benchmarks/supervised.py --cache DIR`` wrote (same trunk and canvas), so no image passes
through the trunk. For every ``box_smooth`` x ``box_vote``
pair the same weights decode the 206 validation images (mAP@0.5 in canvas pixels, as the
training loop's epoch choice computes it: the criterion) and, reported beside and choosing
nothing, the 360 test images (mAP@0.5 and AP per class in image pixels, as ``supervised.py``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle")
    cache = os.environ.get("FLAWSCOPE_BENCH_CACHE", "/tmp/flawscope-bench-cache")
    parser.add_argument("--cache", default=cache, help="the bank folder of benchmarks/supervised.py")
    parser.add_argument("--smooth", default="1,3,5", help="box_smooth values")
    parser.add_argument("--vote", default="1,0.5,0.6,0.7", help="box_vote values (1: off)")
    parser.add_argument("--out", default=str(HERE / "results" / "neu_box_decoding.json"))
    args = parser.parse_args()
    import torch

    from flawscope.data.preprocess import geometry_of
    from flawscope.evaluate.supervised import detection_map
    from flawscope.features.cache import FeatureBank
    from flawscope.models.box_detector import BoxDetector, canvas_boxes
    from flawscope.models.box_training import _validation_map
    from flawscope.models.io import load_model

    sys.path.insert(0, str(HERE))
    from supervised import bank_key, load, splits  # the same data, split and bank as the main benchmark

    torch.set_num_threads(1)
    started, load0 = dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), os.getloadavg()
    c0 = time.process_time()
    model, _ = load_model(args.bundle)
    assert isinstance(model, BoxDetector), f"{args.bundle} is not a box_detector"
    samples, images, targets = load("neu_surface")
    split = splits("neu_surface", samples)[0]
    bank_file = Path(args.cache) / f"neu_surface-detect-{bank_key(model)}-bank.safetensors"
    bank = FeatureBank.load(bank_file)
    assert model.preprocessing_ is not None
    geometries = [geometry_of(im.shape, model.preprocessing_) for im in images]
    classes = model._box_classes()
    boxes = [canvas_boxes(targets.boxes[i], geometries[i], classes) for i in range(len(images))]
    val_rows = bank.rows(list(split.validation), views=False)
    saved = dict(model.params)
    rows = []
    for smooth, vote in itertools.product(
        [int(v) for v in args.smooth.split(",")], [float(v) for v in args.vote.split(",")]
    ):
        model.params["box_smooth"], model.params["box_vote"] = smooth, vote
        model.head_ = None
        row: dict[str, object] = {"box_smooth": smooth, "box_vote": vote}
        row["validation_map_canvas"] = _validation_map(model, bank, val_rows, boxes)
        for part in ("validation", "test"):
            idx = list(getattr(split, part))
            pred = model.predict_bank(bank, bank.rows(idx, views=False), [geometries[i] for i in idx])
            found = detection_map(pred.boxes, [targets.boxes[i] for i in idx], model.classes_)
            row[f"{part}_map"], row[f"{part}_ap"] = found["map"], found["ap"]
        rows.append(row)
        print(f"smooth {smooth} vote {vote}: validation {row['validation_map_canvas']:.4f} "
              f"(image px {row['validation_map']:.4f}), test {row['test_map']:.4f}", flush=True)  # fmt: skip
    model.params.update(saved)
    result = {
        "command": "python benchmarks/neu_box_decoding.py " + " ".join(sys.argv[1:]),
        "bundle": args.bundle,
        "bank": str(bank_file),
        "hyperparameters": {k: v for k, v in saved.items() if k.startswith("box_")},
        "started": started,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_seconds": round(time.process_time() - c0, 1),
        "load_average_before": load0,
        "load_average_after": os.getloadavg(),
        "n_validation": len(split.validation),
        "n_test": len(split.test),
        "rows": rows,
        "best_on_validation": max(rows, key=lambda r: float(np.asarray(r["validation_map_canvas"]))),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

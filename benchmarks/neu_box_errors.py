"""Where a NEU ``box_detector`` loses mAP@0.5: per-class AP, error kinds, recall by box size, NMS.

    python benchmarks/neu_box_errors.py BUNDLE [--out benchmarks/results/neu_box_errors.json]

BUNDLE is a trained ``box_detector`` bundle fitted on neu_surface's ``splits.csv`` (``python
benchmarks/supervised.py --datasets neu_surface --tasks detect --save DIR`` writes one as
``DIR/neu_surface-detect/fold0``). The trunk runs once over the validation and test images;
the boxes are finished in image pixels exactly as ``evaluate`` finishes them. Printed and saved:

* AP@0.5 per class and mAP, on validation and test, at the bundle's own ``box_nms``.
* Error kinds of the top-``n`` detections of each class (``n`` its number of true boxes, where
  its precision-recall curve is decided): a hit, a duplicate of a matched box, a poor box (IoU
  0.1-0.5 with a true box of its class), background, or on an image without that class.
* Recall by box size: a true box counts as found when any of the graph's ``top_k`` boxes of its
  class overlaps it at IoU >= 0.5, whatever its confidence (what ranking cannot exceed).
* ``box_nms`` swept on the **validation** images only (the setting is chosen there; the test
  images are reported at the bundle's value and at the validation's choice).
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
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
SIZES = (0, 20, 40, 70, 110, 160, 10_000)  # sqrt(box area) in image pixels
NMS_LEVELS = (0.4, 0.5, 0.6, 0.7, 0.8, 1.0)


def error_kinds(found: list[Any], truth: list[Any], cls: str) -> dict[str, int]:
    """Kinds of the top-n detections of ``cls``, ``n`` its number of true boxes."""
    from flawscope.evaluate.supervised import box_iou

    gts = [np.array([t[:4] for t in boxes if t[4] == cls], np.float64).reshape(-1, 4) for boxes in truth]
    n = sum(len(g) for g in gts)
    dets = sorted(((b[4], j, b[:4]) for j, boxes in enumerate(found) for b in boxes if b[5] == cls),
                  key=lambda d: -d[0])  # fmt: skip
    used = [np.zeros(len(g), bool) for g in gts]
    kinds = {"hit": 0, "duplicate": 0, "poor_box": 0, "background": 0, "other_class_image": 0}
    for _, j, box in dets[:n]:
        if not len(gts[j]):
            kinds["other_class_image"] += 1
            continue
        overlap = box_iou(np.array([box], np.float64), gts[j])[0]
        k = int(overlap.argmax())
        if overlap[k] >= 0.5 and not used[j][k]:
            used[j][k] = True
            kinds["hit"] += 1
        elif overlap[k] >= 0.5:
            kinds["duplicate"] += 1
        else:
            kinds["poor_box" if overlap[k] >= 0.1 else "background"] += 1
    return kinds


def reachable(found: list[Any], truth: list[Any]) -> dict[str, Any]:
    """Share of true boxes any detection of their class overlaps at IoU >= 0.5, by size and class."""
    from flawscope.evaluate.supervised import box_iou

    size, hit, cls = [], [], []
    for boxes, dets in zip(truth, found, strict=True):
        for t in boxes:
            cand = np.array([d[:4] for d in dets if d[5] == t[4]], np.float64).reshape(-1, 4)
            best = float(box_iou(np.array([t[:4]], np.float64), cand)[0].max()) if len(cand) else 0.0
            size.append(float(np.sqrt((t[2] - t[0]) * (t[3] - t[1]))))
            hit.append(best >= 0.5)
            cls.append(t[4])
    s, h, c = np.array(size), np.array(hit), np.array(cls)
    by_size = {}
    for lo, hi in itertools.pairwise(SIZES):
        inside = (s >= lo) & (s < hi)
        by_size[f"{lo}-{hi}"] = {"boxes": int(inside.sum()), "reachable": round(float(h[inside].mean()), 3)
                                 if inside.any() else None}  # fmt: skip
    by_class = {k: round(float(h[c == k].mean()), 3) for k in sorted(set(cls))}
    return {"all": round(float(h.mean()), 3), "by_sqrt_area_px": by_size, "by_class": by_class}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("--out", default=str(HERE / "results" / "neu_box_errors.json"))
    args = parser.parse_args()
    import torch

    from flawscope.data.preprocess import geometry_of
    from flawscope.evaluate.supervised import detection_map
    from flawscope.features.cache import extract_bank
    from flawscope.models.engine import make_runner
    from flawscope.models.io import load_model
    from supervised import load, splits

    torch.set_num_threads(1)
    started, load0, t0, c0 = dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), os.getloadavg(), \
        time.perf_counter(), time.process_time()  # fmt: skip
    model, _ = load_model(args.bundle)
    samples, images, targets = load("neu_surface")
    split = splits("neu_surface", samples)[0]
    pre = model.preprocessing_
    runner = make_runner(model._embedder(), pre.height, pre.width, "auto")
    parts = {"validation": list(split.validation), "test": list(split.test)}
    everything = parts["validation"] + parts["test"]
    bank = extract_bank([images[i] for i in everything], [None] * len(everything), [0] * len(everything),
                        pre, runner)  # fmt: skip
    own_nms = float(model.params["box_nms"])

    def boxes_at(nms: float, part: str) -> tuple[list[Any], list[Any]]:
        model.params["box_nms"], model.head_ = nms, None
        start = 0 if part == "validation" else len(parts["validation"])
        rows = np.arange(start, start + len(parts[part]))
        geometries = [geometry_of(images[i].shape, pre) for i in parts[part]]
        pred = model.predict_bank(bank, rows, geometries)
        return [list(b) for b in pred.boxes], [list(targets.boxes[i]) for i in parts[part]]

    out: dict[str, Any] = {"bundle": args.bundle, "started": started, "load_average_before": load0,
                           "bundle_box_nms": own_nms, "canvas": [pre.height, pre.width]}  # fmt: skip
    classes = [c for c in model.classes_ if c != "good"]
    sweep = {}
    for nms in NMS_LEVELS:
        found, truth = boxes_at(nms, "validation")
        sweep[str(nms)] = round(float(detection_map(found, truth, model.classes_)["map"]), 4)
    chosen = float(max(sweep, key=lambda k: sweep[k]))
    out["validation_map_by_box_nms"], out["box_nms_chosen_on_validation"] = sweep, chosen
    for part in parts:
        found, truth = boxes_at(own_nms, part)
        result = detection_map(found, truth, model.classes_)
        out[part] = {
            "map": round(float(result["map"]), 4),
            "ap": {k: round(float(v), 4) for k, v in result["ap"].items()},
            "error_kinds_top_n": {c: error_kinds(found, truth, c) for c in classes},
            "reachable_at_iou_0.5": reachable(found, truth),
        }
        if part == "test" and chosen != own_nms:
            found, truth = boxes_at(chosen, part)
            out[part][f"map_at_box_nms_{chosen}"] = round(
                float(detection_map(found, truth, model.classes_)["map"]), 4
            )
    out["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    out["seconds"], out["cpu_seconds"] = (
        round(time.perf_counter() - t0, 1),
        round(time.process_time() - c0, 1),
    )
    out["load_average_after"] = os.getloadavg()
    print(f"box_nms on validation: {sweep} -> {chosen}")
    for part in parts:
        print(f"{part}: mAP@0.5 {out[part]['map']:.4f}  AP {out[part]['ap']}")
        for c, kinds in out[part]["error_kinds_top_n"].items():
            print(f"  {c}: {kinds}")
        print(f"  reachable: {out[part]['reachable_at_iou_0.5']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""A saved NEU ``box_detector``: its verdict regions per box level, and its INT8 graph's mAP loss.

    python benchmarks/neu_boxes.py BUNDLE [--int8-on test|validation] [--calibration 64]
                                          [--out benchmarks/results/neu_boxes.json]

BUNDLE is a trained bundle of a ``box_detector`` fitted on neu_surface's ``splits.csv``
(``python benchmarks/supervised.py --datasets neu_surface --tasks detect --save DIR`` writes one
as ``DIR/neu_surface-detect/fold0``). Two measurements, with the deployed graphs (ONNX Runtime,
as a station runs them):

* Regions: the verdicts' regions (``decide_many``, one region per box at or above the box level)
  on the **validation** and the **test** images, matched to the true boxes (same class, IoU >=
  0.5): precision, recall and F1 per level, and at the level the detector learnt on its
  validation images (its bundle's own; the thresholds' ``region_level`` overrides it). Only the
  validation rows may choose a level; the test rows are reported.
* INT8: the bundle exported with an INT8 graph (activation ranges from ``--calibration``
  training images of every class), both graphs' mAP@0.5 on the 360 **test** images
  (``int8_check.validate``), or on the 206 validation images with ``--int8-on validation``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5)


def region_matches(verdicts: list[Any], truth: list[tuple[Any, ...]]) -> dict[str, float]:
    """Precision, recall, F1 of verdict regions against true boxes (``evaluate.supervised.region_f1``)."""
    from flawscope.evaluate.supervised import region_f1

    found = [[(*r.bbox, r.peak, r.category) for r in v.regions] for v in verdicts]
    r = region_f1(found, truth)
    return {"regions": r["kept"], "true_boxes": r["true_boxes"], "precision": r["precision"],
            "recall": r["recall"], "f1": r["f1"]}  # fmt: skip


def _plain(value: Any) -> Any:
    """JSON for the manifest's read-only mappings and numpy numbers."""
    return dict(value) if isinstance(value, Mapping) else float(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("--out", default=str(HERE / "results" / "neu_boxes.json"))
    parser.add_argument("--int8-on", choices=("test", "validation"), default="test")
    parser.add_argument("--calibration", type=int, default=64, help="training images for INT8 ranges")
    args = parser.parse_args()
    import torch

    from flawscope.data.splits import fixed
    from flawscope.decide.thresholds import Thresholds
    from flawscope.decide.verdict import decide_many
    from flawscope.export.onnx_export import export_bundle
    from flawscope.runtime import Inspector
    from supervised import load

    torch.set_num_threads(1)
    started, load0 = dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), os.getloadavg()
    c0 = time.process_time()
    samples, images, _ = load("neu_surface")
    split = fixed(samples, seed=0)
    boxes = [tuple(s.boxes) for s in samples]
    out: dict[str, Any] = {"bundle": args.bundle, "started": started, "load_average_before": load0}
    with tempfile.TemporaryDirectory() as tmp:
        train = list(split.train)
        n_cal = args.calibration
        calibration = [images[i] for i in train[:: max(1, len(train) // n_cal)]][:n_cal]
        test = list(split.test if args.int8_on == "test" else split.validation)
        out["int8_on"] = args.int8_on
        t0 = time.perf_counter()
        deployed = export_bundle(
            args.bundle, Path(tmp) / "deployed", int8=True, calibration_images=calibration,
            validation=([images[i] for i in test], [1] * len(test)),
            validation_boxes=[boxes[i] for i in test],
        )  # fmt: skip
        assert deployed.manifest.deploy is not None and deployed.manifest.deploy.int8 is not None
        info = deployed.manifest.deploy.int8
        out["int8"] = {
            "validation": dict(info.validation or {}),
            "within_tolerance": info.within_tolerance,
            "calibration_images": info.calibration_images,
            "export_seconds": round(time.perf_counter() - t0, 1),
        }
        checked = out["int8"]["validation"]
        print(
            f"INT8 mAP@0.5 {checked['map_int8']:.4f} vs fp32 {checked['map_fp32']:.4f} on {len(test)} "
            f"{args.int8_on} images (loss {checked['map_loss']:.4f}, budget {checked['max_map_loss']})",
            flush=True,
        )
        # Same-run speed of the two graphs (64 images, one thread, best of two passes).
        timed = [images[i] for i in test[:64]]
        for name, int8 in (("fp32", False), ("int8", True)):
            inspector = Inspector.load(deployed.path, int8=int8, threads=1)
            passes = []
            for _ in range(2):
                t1 = time.perf_counter()
                inspector.score_many(timed)
                passes.append(time.perf_counter() - t1)
            out["int8"][f"{name}_ms_per_image"] = round(1000 * min(passes) / len(timed), 2)
        speed = out["int8"]
        print(f"ms per image, fp32 {speed['fp32_ms_per_image']}, INT8 {speed['int8_ms_per_image']}")
        # Regions per level on validation (which may choose a level) and on test (reported only);
        # level None is the bundle's own: the level the detector learnt on its validation images.
        inspector = Inspector.load(deployed.path, threads=1)
        for part, index in (("validation", list(split.validation)), ("test", list(split.test))):
            prediction = inspector.score_many([images[i] for i in index])
            rows = []
            for level in (*LEVELS, None):
                rules = {} if level is None else {"region_level": level}
                verdicts = decide_many(prediction, Thresholds.explicit(0.5, **rules))
                rows.append({"level": level, **region_matches(verdicts, [boxes[i] for i in index])})
                r = rows[-1]
                name = f"{level}" if level is not None else f"{prediction.box_level} (the bundle's own)"
                print(
                    f"box level {name}: {r['regions']} regions on {len(index)} {part} images, precision "
                    f"{r['precision']:.3f}, recall {r['recall']:.3f}, F1 {r['f1']:.3f}",
                    flush=True,
                )
            out[f"{part}_regions"] = rows
        out["best_level_by_validation_f1"] = max(
            (r for r in out["validation_regions"] if r["level"] is not None), key=lambda r: r["f1"]
        )["level"]
        out["learnt_box_level"] = prediction.box_level  # the bundle's own (None: trained before it)
    out["cpu_seconds"] = round(time.process_time() - c0, 1)
    out["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    out["load_average_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=_plain))
    best = out["best_level_by_validation_f1"]
    print(f"best box level on validation F1: {best}; {out['cpu_seconds']} s CPU")


if __name__ == "__main__":
    main()

"""Deployed runtime against training-time torch on real data: parity and the cost of INT8.

Trains the default model on a real dataset with good images held out, calibrates thresholds on
them, exports fp32 and INT8 graphs, then scores every test image three ways: torch eager (the
reference: ``engine="torch"``, no ONNX anywhere), the torch-free fp32 runtime and the INT8
runtime, the INT8 graph both with its head refitted on INT8 features (the default export) and
without (the fp32 head, for comparison). Reports the largest relative image-score difference,
verdicts and region counts that differ, and the image AUROC of each. Targets (issue 4): fp32
within 1e-3 relative with identical verdicts; INT8 loses at most 0.005 image AUROC. Writes
benchmarks/results/parity_<dataset>_<model>.json.

    python benchmarks/parity.py [--dataset magnetic_tile] [--model padim] [--holdout 0.4]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "datasets"


def compare(reference: list[Any], other: list[Any]) -> dict[str, Any]:
    """Score, verdict and region-count agreement of two lists of verdicts on the same images."""
    ref = np.array([v.score for v in reference], dtype=np.float64)
    got = np.array([v.score for v in other], dtype=np.float64)
    relative = np.abs(got - ref) / np.maximum(np.abs(ref), 1e-12)
    outcomes = sum(a.outcome != b.outcome for a, b in zip(reference, other, strict=True))
    regions = sum(len(a.regions) != len(b.regions) for a, b in zip(reference, other, strict=True))
    return {
        "max_relative_score_difference": float(relative.max()),
        "median_relative_score_difference": float(np.median(relative)),
        "verdicts_differing": int(outcomes),
        "region_counts_differing": int(regions),
        "n": len(reference),
    }


def main() -> None:
    import torch
    from sklearn.metrics import roc_auc_score

    from flawscope.bundle import read_bundle
    from flawscope.data.datasets import load_dataset, read_samples
    from flawscope.decide.verdict import decide
    from flawscope.decide.workflow import calibrate_bundle
    from flawscope.export.inputs import int8_inputs
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.io import load_model
    from flawscope.models.train import train
    from flawscope.runtime import Inspector

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="magnetic_tile")
    parser.add_argument("--model", default="padim")
    parser.add_argument("--holdout", type=float, default=0.4)
    args = parser.parse_args()
    torch.set_num_threads(2)
    root = SHARED / args.dataset
    if not (root / "manifest.csv").is_file():
        raise SystemExit(f"dataset not found: {root} (it lives in ../shared/datasets); nothing measured")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        bundle, deploy = Path(tmp) / "bundle", Path(tmp) / "deploy"
        trained = train(root, bundle, model=args.model, holdout=args.holdout)
        calibrate_bundle(bundle, trained.holdout_images, target_frr=0.01, names=trained.holdout_paths)
        # What `flawscope export --int8` does: calibrate on held-out good images, refit the head on
        # the fitted ones, validate on the test split.
        inputs = int8_inputs(read_bundle(bundle).manifest)
        export_bundle(bundle, deploy, **inputs.export_args())
        stale = Path(tmp) / "stale"
        export_bundle(bundle, stale, int8=True, calibration_images=inputs.calibration)
        deploy_info = read_bundle(deploy).manifest.to_dict()["deploy"]
        test = read_samples(load_dataset(root).test, masks=False)
        labels = np.array([s.label for s in test.samples])

        model, _ = load_model(bundle)
        model.config = dataclasses.replace(model.config, engine="torch")  # the reference: no ONNX
        model.runner_ = None
        prediction = model.predict(test.images)
        fp32 = Inspector.load(deploy, threads=2)
        thresholds = fp32.thresholds
        assert thresholds is not None
        reference = [
            decide(float(s), m, thresholds, fp32.model_hash)
            for s, m in zip(prediction.scores, prediction.maps, strict=True)
        ]
        runtime: dict[str, list[Any]] = {"fp32": [], "int8": [], "int8_fp32_head": []}
        int8 = Inspector.load(deploy, int8=True, threads=2)
        int8_stale = Inspector.load(stale, int8=True, threads=2)
        for start in range(0, len(test.images), 8):
            batch = test.images[start : start + 8]
            runtime["fp32"].extend(fp32.inspect_many(batch))
            runtime["int8"].extend(int8.inspect_many(batch))
            runtime["int8_fp32_head"].extend(int8_stale.inspect_many(batch))

    def auroc(verdicts: list[Any]) -> float:
        return float(roc_auc_score(labels, [v.score for v in verdicts]))

    def outcomes(verdicts: list[Any]) -> dict[str, Any]:
        """What the thresholds did on the test parts: good parts failed, defective parts stopped."""
        failed = np.array([v.outcome == "fail" for v in verdicts])
        stopped = np.array([v.outcome in ("fail", "review") for v in verdicts])
        return {
            "good_failed": int(failed[labels == 0].sum()),
            "n_good": int((labels == 0).sum()),
            "defects_stopped": int(stopped[labels == 1].sum()),
            "n_defect": int((labels == 1).sum()),
        }

    out: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average": os.getloadavg(),
        "dataset": args.dataset,
        "model": args.model,
        "n_fit": trained.n_train,
        "n_test": len(labels),
        "image_auroc": {
            "torch": auroc(reference),
            "fp32": auroc(runtime["fp32"]),
            "int8": auroc(runtime["int8"]),
            "int8_fp32_head": auroc(runtime["int8_fp32_head"]),
        },
        "outcomes": {
            "torch": outcomes(reference),
            **{name: outcomes(verdicts) for name, verdicts in runtime.items()},
        },
        "fp32_vs_torch": compare(reference, runtime["fp32"]),
        "int8_vs_torch": compare(reference, runtime["int8"]),
        "int8_fp32_head_vs_torch": compare(reference, runtime["int8_fp32_head"]),
        "int8_at_export": deploy_info["int8"],
        "seconds": time.perf_counter() - started,
    }
    out["int8_auroc_loss"] = out["image_auroc"]["torch"] - out["image_auroc"]["int8"]
    out["int8_fp32_head_auroc_loss"] = out["image_auroc"]["torch"] - out["image_auroc"]["int8_fp32_head"]
    out["targets"] = {
        "fp32_within_1e-3_and_same_verdicts": out["fp32_vs_torch"]["max_relative_score_difference"] <= 1e-3
        and out["fp32_vs_torch"]["verdicts_differing"] == 0,
        "int8_auroc_loss_at_most_0.005": out["int8_auroc_loss"] <= 0.005,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"parity_{args.dataset}_{args.model}.json").write_text(json.dumps(out, indent=2))
    print(
        json.dumps(
            {
                k: out[k]
                for k in (
                    "image_auroc",
                    "outcomes",
                    "fp32_vs_torch",
                    "int8_vs_torch",
                    "int8_at_export",
                    "targets",
                )
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

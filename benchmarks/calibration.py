"""Calibrated decisions on real data: recall at the calibrated 1% false-reject threshold.

Trains the default model on magnetic_tile with 40% of the good training images held out (304
images: enough for a 1% target to be shown with a 95% Clopper-Pearson bound), calibrates, then
evaluates on the untouched test split and writes the HTML report. Also times calibration on
1,000 scores and the report. Writes benchmarks/results/calibration.json.

    python benchmarks/calibration.py [--dataset magnetic_tile] [--holdout 0.4] [--model padim]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "datasets"


def main() -> None:
    import torch

    from flawscope.decide.calibration import calibrate
    from flawscope.decide.workflow import calibrate_bundle
    from flawscope.evaluate.run import evaluate_bundle
    from flawscope.models.train import train

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="magnetic_tile")
    parser.add_argument("--holdout", type=float, default=0.4)
    parser.add_argument("--model", default="padim")
    parser.add_argument("--target-frr", type=float, default=0.01)
    parser.add_argument("--report", default=None, help="keep the HTML report here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    root = SHARED / args.dataset
    if not (root / "manifest.csv").is_file():
        raise SystemExit(f"dataset not found: {root} (it lives in ../shared/datasets)")
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        trained = train(root, bundle, model=args.model, holdout=args.holdout)
        start = time.perf_counter()
        result = calibrate_bundle(
            bundle, trained.holdout_images, target_frr=args.target_frr, names=trained.holdout_paths
        )
        calibrate_total = time.perf_counter() - start
        report = Path(args.report) if args.report else Path(tmp) / "report.html"
        start = time.perf_counter()
        run = evaluate_bundle(bundle, root, report=None)
        evaluate_seconds = time.perf_counter() - start
        from flawscope.bundle import read_bundle
        from flawscope.evaluate.report import build_report

        start = time.perf_counter()
        build_report(run, read_bundle(bundle), args.dataset, report)
        report_seconds = time.perf_counter() - start
    scores = np.random.default_rng(0).gamma(4.0, 1.0, size=1000)
    start = time.perf_counter()
    calibrate(scores, target_frr=0.01)
    calib_1000 = time.perf_counter() - start
    point = run.operating_point
    assert point is not None
    out = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average": os.getloadavg(),
        "dataset": args.dataset,
        "model": args.model,
        "holdout_fraction": args.holdout,
        "n_fit": trained.n_train,
        "calibration": result.to_dict(),
        "test": point.to_dict(),
        "image_auroc": run.summary.overall.image_auroc,
        "calibrate_1000_scores_seconds": calib_1000,
        "calibrate_bundle_seconds_incl_scoring": calibrate_total,
        "evaluate_seconds": evaluate_seconds,
        "report_seconds": report_seconds,
        "n_test": len(run.samples),
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "calibration.json").write_text(json.dumps(out, indent=2, default=str))
    c = result
    lo, hi = point.recall_ci or (float("nan"), float("nan"))
    print(
        f"calibration: {c.n_good} held-out good images, reject threshold {c.thresholds.reject:.4g}, "
        f"{c.n_false_rejects} false rejects ({c.empirical_frr:.2%}), FRR upper bound {c.frr_upper_bound:.2%} "
        f"[{c.guarantee}]"
    )
    print(
        f"test split: FRR {point.frr:.2%} (95% upper bound {point.frr_upper_bound:.2%}, n={point.n_good}); "
        f"recall {point.recall:.2%} (95% CI {lo:.2%}-{hi:.2%}, n={point.n_defect})"
    )
    print(
        f"calibrate(1000 scores) {calib_1000 * 1000:.1f} ms; report for {len(run.samples)} images "
        f"{report_seconds:.1f} s"
    )


if __name__ == "__main__":
    main()

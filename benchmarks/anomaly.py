"""Accuracy and cost of every registered anomaly model on the real and synthetic datasets.

Each (dataset, model) pair runs in its own subprocess so peak RSS is its own. Prints one table
and writes benchmarks/results/anomaly.json.

    python benchmarks/anomaly.py [--datasets magnetic_tile,kolektorsdd,synthetic] [--models padim,patchcore]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "datasets"


def run_one(dataset: str, model: str, backbone: str, out: Path) -> dict:
    import torch

    from flawscope.data.synthetic import SyntheticSpec, write_dataset
    from flawscope.evaluate.run import evaluate_bundle
    from flawscope.models.train import train

    torch.set_num_threads(2)
    if dataset == "synthetic":
        root = out / "synthetic"
        write_dataset(
            root, SyntheticSpec(size=(256, 256), n_train=200, n_test_good=60, n_test_defect_per_type=12)
        )
    else:
        root = SHARED / dataset
    name, _, rest = model.partition(":")  # "patchcore:search_dims=64;max_bank=4096"
    params: dict = {"backbone": backbone}
    for item in filter(None, rest.split(";")):
        key, _, value = item.partition("=")
        params[key] = json.loads(value)
    start = time.perf_counter()
    result = train(root, out / "bundle", model=name, params=params)
    train_seconds = time.perf_counter() - start
    run = evaluate_bundle(out / "bundle", root, store_metrics=False)
    m = run.summary.overall
    return {
        "dataset": dataset,
        "model": model,
        "backbone": backbone,
        "image_auroc": m.image_auroc,
        "pixel_auroc": m.pixel_auroc,
        "au_pro": m.au_pro,
        "best_f1": m.best_f1,
        "recall_at_1pct_frr": m.recall_at_frr,
        "achieved_frr": m.achieved_frr,
        "per_type_image_auroc": {k: v.image_auroc for k, v in run.summary.per_type.items()},
        "fit_seconds": round(result.fit_seconds, 2),
        "train_seconds_incl_io": round(train_seconds, 2),
        "predict_images_per_second": round(len(run.samples) / run.predict_seconds, 2),
        "n_train": result.n_train,
        "n_test": len(run.samples),
        "canvas": [result.model.preprocessing_.height, result.model.preprocessing_.width],
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", default="magnetic_tile,kolektorsdd,synthetic")
    parser.add_argument(
        "--models",
        default=None,
        help="comma-separated, hyperparameters after a colon, e.g. patchcore:search_dims=64;max_bank=4096 "
        "(default: every registered model)",
    )
    parser.add_argument("--output", default="anomaly.json", help="file name under benchmarks/results")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--one", nargs=2, metavar=("DATASET", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run_one(args.one[0], args.one[1], args.backbone, Path(tmp))))
        return
    from flawscope.models import MODELS

    models = args.models.split(",") if args.models else sorted(MODELS)
    rows = []
    for dataset in args.datasets.split(","):
        if dataset != "synthetic" and not (SHARED / dataset / "manifest.csv").is_file():
            print(f"skipping {dataset}: not found in {SHARED}", file=sys.stderr)
            continue
        for model in models:
            print(f"running {model} on {dataset} ...", file=sys.stderr, flush=True)
            proc = subprocess.run(
                [sys.executable, __file__, "--one", dataset, model, "--backbone", args.backbone],
                capture_output=True,
                text=True,
                env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
            )
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    header = (
        "dataset",
        "model",
        "img AUROC",
        "pix AUROC",
        "AU-PRO",
        "best F1",
        "recall@FRR1%",
        "fit s",
        "predict img/s",
        "peak RSS GB",
    )

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                [
                    r["dataset"],
                    r["model"],
                    f(r["image_auroc"]),
                    f(r["pixel_auroc"]),
                    f(r["au_pro"]),
                    f(r["best_f1"]),
                    f(r["recall_at_1pct_frr"]),
                    f"{r['fit_seconds']:.1f}",
                    f"{r['predict_images_per_second']:.1f}",
                    f"{r['peak_rss_gb']:.2f}",
                ]
            )
            + " |"
        )
    print("\n".join(lines))
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "backbone": args.backbone,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / args.output).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

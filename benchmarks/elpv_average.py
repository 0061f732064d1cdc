"""ELPV: what averaging the defect probabilities of several fitted classifiers gives (issue 13).

    python benchmarks/elpv_average.py RUN.json RUN.json [...] [--tta none]
                                      [--out benchmarks/results/elpv_average.json]

Each ``RUN.json`` is written by ``benchmarks/elpv.py`` (same split: it holds every validation and
test cell's defect probability, per test-time view set). The cells' probabilities are averaged
over the runs (what a station running every fitted trunk and head on each part, then averaging,
would output) and scored on the validation and the test part: accuracy at p >= 0.5, log-loss,
AUROC. Nothing is fitted or chosen here; the per-part cost is the runs' predict seconds added
(each run is one more trunk pass per part; the runs' own timings, so under their load).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def score(p: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Accuracy at p >= 0.5, log-loss and AUROC of defect probabilities ``p`` against ``y``."""
    from sklearn.metrics import roc_auc_score

    q = np.clip(p, 1e-7, 1 - 1e-7)
    return {
        "accuracy": float(((p >= 0.5) == y).mean()),
        "right": int(((p >= 0.5) == y).sum()),
        "cells": len(y),
        "log_loss": float(-np.mean(np.where(y, np.log(q), np.log(1 - q)))),
        "image_auroc": float(roc_auc_score(y, p)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="JSON files written by benchmarks/elpv.py")
    parser.add_argument("--tta", default="none", help="which view set's probabilities to average")
    parser.add_argument("--out", default=str(HERE / "results" / "elpv_average.json"))
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from supervised import load, splits  # the split every elpv.py run used

    samples, _, targets = load("elpv")
    split = splits("elpv", samples)[0]
    result: dict[str, Any] = {"command": "python benchmarks/elpv_average.py " + " ".join(args.runs)
                              + f" --tta {args.tta}", "runs": args.runs, "tta": args.tta}  # fmt: skip
    for name, index in (("validation", split.validation), ("test", split.test)):
        y = np.array([targets.classes[int(i)] != "good" for i in index])
        probs, seconds = [], 0.0
        for path in args.runs:
            data = json.loads(Path(path).read_text())
            if name == "test" and [int(i) for i in data["elpv_test_indices"]] != [int(i) for i in index]:
                raise SystemExit(f"{path}: another test split than this one")
            row = next((r for r in data["runs"] if r["tta"] == args.tta), None)
            if row is None:
                raise SystemExit(f"{path}: no predictions with tta={args.tta!r}")
            p = np.asarray(row[name]["defect_scores"], np.float64)
            if len(p) != len(y):
                raise SystemExit(f"{path}: {len(p)} {name} cells, expected {len(y)}")
            probs.append(p)
            seconds += float(row[name]["predict_seconds"])
        result[name] = {
            "each": [score(p, y) for p in probs],
            "average": score(np.mean(probs, axis=0), y),
            "predict_seconds_per_cell": round(seconds / len(y), 4),
        }
        each = ", ".join(f"{s['accuracy']:.4f}" for s in result[name]["each"])
        avg = result[name]["average"]
        print(f"{name}: each {each}; average accuracy {avg['accuracy']:.4f} ({avg['right']}/{avg['cells']}) "
              f"log-loss {avg['log_loss']:.4f} AUROC {avg['image_auroc']:.4f}; "
              f"{result[name]['predict_seconds_per_cell'] * 1000:.1f} ms a cell for all runs")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""ELPV: where a fitted classifier's errors are, by the cells' labelled defect probability (issue 13).

    python benchmarks/elpv_levels.py RUN.json [RUN.json ...] [--out benchmarks/results/elpv_levels.json]

Each ``RUN.json`` is written by ``benchmarks/elpv.py`` (it holds every validation and test cell's
defect probability, in the order of the written-down split). ELPV's annotators gave each cell a
defect probability of 0, 1/3, 2/3 or 1, and a cell counts as defective when it is >= 0.5; this
prints, per part and per level, how many cells the run's decision (p >= 0.5) gets wrong. Nothing
is fitted or chosen here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def levels(scores: np.ndarray, labelled: np.ndarray) -> dict[str, dict[str, int]]:
    """Per labelled level (rounded to 2 places): its cells and those the p >= 0.5 decision gets wrong."""
    out = {}
    for level in sorted(set(np.round(labelled, 2).tolist())):
        at = np.round(labelled, 2) == level
        wrong = int(((scores[at] >= 0.5) != (level >= 0.5)).sum())
        out[f"{level:.2f}"] = {"cells": int(at.sum()), "wrong": wrong}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="JSON files written by benchmarks/elpv.py")
    parser.add_argument("--out", default=str(HERE / "results" / "elpv_levels.json"))
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from supervised import load, splits  # the same data and split as elpv.py

    samples, _, targets = load("elpv")
    split = splits("elpv", samples)[0]
    probabilities = np.asarray(targets.probabilities, np.float64)
    parts = {"validation": [int(i) for i in split.validation], "test": [int(i) for i in split.test]}
    result: dict[str, Any] = {}
    for path in args.runs:
        run = json.loads(Path(path).read_text())
        if run["elpv_test_indices"] != parts["test"]:
            raise SystemExit(f"{path}: its test cells are not the written-down split's")
        chosen = next(r for r in run["runs"] if r["tta"] == run["chosen_tta"])
        result[Path(path).name] = {}
        for name, index in parts.items():
            scores = np.asarray(chosen[name]["defect_scores"], np.float64)
            found = levels(scores, probabilities[index])
            result[Path(path).name][name] = found
            cells = ", ".join(f"p={k}: {v['wrong']}/{v['cells']} wrong" for k, v in found.items())
            print(f"{Path(path).name} {name}: {cells}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

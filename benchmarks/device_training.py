"""One station's training on each device, side by side, on generated parts of kolektorsdd's shape (issue 13).

    python benchmarks/device_training.py [--devices cpu,cuda] [--threads N]
                                         [--out benchmarks/results/device_training.json]

The parts are generated (:mod:`flawscope.data.synthetic`), so the run needs no dataset and no
network: as many as one kolektorsdd fold trains on (149 good, 33 defective training parts of
1,250 x 500 px, grayscale, with masks; 74 good and 17 defective held-out parts), the workload of
one training run of the benchmark's station. For each device the same segmenter station (the
shipped defaults with ``anomaly="padim"``, ``score="fused"``) is fitted with ``device=...``: the
table gives the wall time, the process CPU time, the feature bank's extraction and the heads'
training, and each model's held-out image AUROC and recall at FRR <= 1%; the last row is the rank
correlation of the two models' held-out scores (a GPU's arithmetic differs in the last bits, so
its heads are close to, not equal to, the CPU's).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SIZE = (1250, 500)
KINDS = ("scratch", "spot", "crack", "contamination", "missing")


def parts(seed: int = 0) -> dict[str, Any]:
    """Training and held-out parts with kolektorsdd's counts and size (one 3-fold training split)."""
    from flawscope.data.synthetic import SyntheticSpec, add_defect, make_part

    rng = np.random.default_rng(seed)
    spec = SyntheticSpec(texture="brushed_metal", size=SIZE, seed=seed)

    def defective(n: int) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
        images, masks, kinds = [], [], []
        for i in range(n):
            kind = KINDS[i % len(KINDS)]
            image, mask = add_defect(make_part(rng, spec), kind, rng)
            images.append(image)
            masks.append(mask)
            kinds.append(kind)
        return images, masks, kinds

    good = [make_part(rng, spec) for _ in range(149)]
    bad, bad_masks, bad_kinds = defective(33)
    held_good = [make_part(rng, spec) for _ in range(74)]
    held_bad, _, _ = defective(17)
    return {"train": good + bad, "masks": [np.zeros(SIZE, bool)] * len(good) + bad_masks,
            "classes": ["good"] * len(good) + bad_kinds, "held": held_good + held_bad,
            "held_defective": np.array([0] * len(held_good) + [1] * len(held_bad))}  # fmt: skip


def fit_on(device: str, data: dict[str, Any], threads: int) -> dict[str, Any]:
    """Fit the station on ``device`` and time it; its held-out scores and metrics."""
    import torch
    from sklearn.metrics import roc_auc_score

    from flawscope.evaluate.metrics import evaluate_scores
    from flawscope.models import get_model_class
    from flawscope.types import Targets

    torch.set_num_threads(threads)
    model = get_model_class("segmenter")(anomaly="padim", score="fused", device=device, threads=threads)
    targets = Targets(tuple(data["classes"]), tuple(data["masks"]))
    stages: dict[str, float] = {}
    last = [time.perf_counter()]

    def progress(stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        stages[stage] = stages.get(stage, 0.0) + now - last[0]
        last[0] = now

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(data["train"], targets, progress)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    scores = model.predict(data["held"]).scores
    y = data["held_defective"]
    types = ["good" if v == 0 else "defect" for v in y]
    recall = evaluate_scores(scores, y, types, frr=0.01).overall.recall_at_frr
    log = model.training_["log"]
    return {
        "device": device,
        "fit_seconds": round(wall, 1),
        "fit_cpu_seconds": round(cpu, 1),
        "stage_seconds": {k: round(v, 1) for k, v in stages.items()},
        "head_seconds": round(float(log.get("seconds", 0.0)), 1),
        "training_log_device": log.get("device"),
        "epochs_run": log.get("epochs_run"),
        "image_auroc": float(roc_auc_score(y, scores)),
        "recall_at_1pct_frr": float(recall or 0.0),
        "scores": [float(s) for s in scores],
    }


def main() -> None:
    import torch

    from run_record import RunRecord

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", default="cpu,cuda", help="devices to fit on, in order")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (CPU work)")
    parser.add_argument("--out", default=str(HERE / "results" / "device_training.json"))
    args = parser.parse_args()
    record = RunRecord()
    t0 = time.perf_counter()
    data = parts()
    made = time.perf_counter() - t0
    print(f"{len(data['train'])} training and {len(data['held'])} held-out parts generated in {made:.0f} s")
    cuda_init = None
    if any(d.startswith("cuda") for d in args.devices.split(",")):
        # the CUDA context starts once per process: timed apart from the fits
        t1 = time.perf_counter()
        torch.zeros(1, device="cuda")
        torch.cuda.synchronize()
        cuda_init = round(time.perf_counter() - t1, 2)
        print(f"CUDA context started in {cuda_init} s (not in the fits' times)")
    runs = [fit_on(device, data, args.threads) for device in args.devices.split(",")]
    print("device | fit wall s | fit CPU s | stages (s) | heads s | held-out AUROC | recall @ FRR <= 1%")
    for r in runs:
        stages = ", ".join(f"{k} {v}" for k, v in r["stage_seconds"].items())
        cells = [r["device"], r["fit_seconds"], r["fit_cpu_seconds"], stages, r["head_seconds"]]
        print(" | ".join(map(str, cells)), f"| {r['image_auroc']:.4f} | {r['recall_at_1pct_frr']:.3f}")
    ranks = [np.argsort(np.argsort(r["scores"])) for r in runs]
    agreement = float(np.corrcoef(ranks[0], ranks[-1])[0, 1]) if len(runs) > 1 else None
    if agreement is not None:
        pair = f"{runs[0]['device']} vs {runs[-1]['device']}"
        print(f"rank correlation of the held-out scores, {pair}: {agreement:.4f}")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    machine = {
        "cpus": os.cpu_count(),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    record.write(
        args.out, args, machine=machine, rank_correlation=agreement, cuda_init_seconds=cuda_init, runs=runs
    )


if __name__ == "__main__":
    main()

"""The station's graph cost per part with each anomaly head, against the anomaly-only graph (issue 13).

    python benchmarks/station_cost.py [--banks 512,1024] [--rounds 8]
                                      [--out benchmarks/results/station_cost.json]

Graphs as exported, at batch 8 on a 256 x 256 canvas, in ONNX Runtime with one intra-op thread:
the anomaly-only model (embedder + PaDiM head) and the segmenter station (embedder + three
DefectHeads + the anomaly head + the fused score's maps) with the PaDiM head and with a PatchCore
head per bank size. Each call's CPU seconds (``process_time``: what the call computed, much less
changed by other processes' load than wall time) and wall time, the minimum over interleaved
calls. The weights are random: the cost does not depend on them. It times the graph only; the
finishing (``inspect_many``) is the same for every station, as they give the same outputs, and
``benchmarks/throughput.py --station --station-anomaly padim,patchcore`` times it end to end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def graphs(banks: list[int]) -> dict[str, tuple[Any, int]]:
    """The scorers to time and their number of outputs."""
    import torch

    from flawscope.features.backbones import load_backbone
    from flawscope.features.embedder import Embedder
    from flawscope.models.base import Scorer
    from flawscope.models.ensemble import HeadEnsemble
    from flawscope.models.heads import DefectHead, SupervisedHead
    from flawscope.models.padim import MahalanobisHead
    from flawscope.models.patchcore import NearestNeighbourHead

    torch.manual_seed(0)
    channels, cells, classes = 152, 32 * 32, 6
    embedder = Embedder(load_backbone("efficientnet_lite0"), 3, False).eval()
    a = torch.randn(cells, channels, channels) * 0.05
    inv_cov = a @ a.transpose(1, 2) + torch.eye(channels)
    padim = MahalanobisHead(channels, torch.arange(channels), torch.randn(cells, channels), inv_cov)

    def station(anomaly: Any) -> SupervisedHead:
        head = HeadEnsemble([DefectHead(channels, 32, classes, classes, True) for _ in range(3)])
        fusion = torch.stack([torch.zeros(3), torch.ones(3)])
        return SupervisedHead(head.eval(), 1.0, 0, torch.arange(classes), True, anomaly, fusion, 1, True)

    out: dict[str, tuple[Any, int]] = {
        "anomaly-only (PaDiM)": (Scorer(embedder, padim), 1),
        "station PaDiM": (Scorer(embedder, station(padim)), 6),
    }
    for bank in banks:
        nearest = NearestNeighbourHead(torch.randn(bank, channels))
        out[f"station PatchCore {bank}"] = (Scorer(embedder, station(nearest)), 6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--banks", default="512,1024", help="PatchCore bank sizes")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds of 6 timed calls")
    parser.add_argument("--out", default=str(HERE / "results" / "station_cost.json"))
    args = parser.parse_args()
    import onnxruntime as ort

    from flawscope.models.engine import trace_to_onnx

    load_before = os.getloadavg()
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    sessions = {
        name: ort.InferenceSession(
            trace_to_onnx(module.eval(), 256, 256, [f"o{i}" for i in range(n)]),
            options,
            providers=["CPUExecutionProvider"],
        )
        for name, (module, n) in graphs([int(b) for b in args.banks.split(",")]).items()
    }
    batch = np.random.default_rng(0).standard_normal((8, 3, 256, 256)).astype(np.float32)
    cpu = dict.fromkeys(sessions, float("inf"))
    wall = dict(cpu)
    for _ in range(args.rounds):
        for name, session in sessions.items():
            session.run(None, {"image": batch})
            for _ in range(6):
                c, t = time.process_time(), time.perf_counter()
                session.run(None, {"image": batch})
                cpu[name] = min(cpu[name], time.process_time() - c)
                wall[name] = min(wall[name], time.perf_counter() - t)
    base = cpu["anomaly-only (PaDiM)"]
    rows = {
        name: {
            "cpu_ms_per_part": round(cpu[name] / 8e-3, 2),
            "wall_ms_per_part": round(wall[name] / 8e-3, 2),
            "cpu_vs_anomaly_only": round(cpu[name] / base, 3),
        }
        for name in sessions
    }
    for name, row in rows.items():
        print(f"{name:26s} {row['cpu_ms_per_part']:7.2f} ms CPU per part  x{row['cpu_vs_anomaly_only']:.3f}")
    payload = {
        "command": "python benchmarks/station_cost.py "
        + " ".join(f"--{k}={v}" for k, v in vars(args).items()),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average": [load_before, os.getloadavg()],
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()

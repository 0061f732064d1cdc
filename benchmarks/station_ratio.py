"""The combined station's cost against the anomaly-only runtime, timed call by call in pairs (issue 13).

    python benchmarks/station_ratio.py [--station-anomaly padim,patchcore] [--seconds 6] [--rounds 5]
                                       [--out benchmarks/results/station_ratio.json]

``throughput.py --station`` times every row for a while, one row after another, and keeps each
row's best round; a station's cost is then the ratio of two rows timed up to a minute apart. On
this shared two-core machine a row's speed moves by up to 20% over such a span (in one run
PaDiM's INT8 rows gave 103 img/s on good parts and 138 on defective ones), so the ratio carries
that noise. Here the same bundles and parts (:func:`throughput.station_probes`) are timed in
pairs: PaDiM alone, then the station, then PaDiM again, call after call for ``seconds``, so both
see the machine at the same moments. A round's ratio is the station's median call time over
PaDiM's; the table gives the median of the rounds and their range, per part at batch 8 through
``Inspector.inspect_many`` (graph, finishing and decision), fp32 and INT8.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def paired_ratio(alone: Callable[[], object], station: Callable[[], object], seconds: float) -> float:
    """The station's median call time over the anomaly-only one's, the calls alternated for ``seconds``."""
    for _ in range(2):  # warm-up, both
        alone(), station()
    times: tuple[list[float], list[float]] = ([], [])
    start = time.perf_counter()
    while len(times[0]) < 5 or time.perf_counter() - start < seconds:
        for fn, into in ((alone, times[0]), (station, times[1])):
            t0 = time.perf_counter()
            fn()
            into.append(time.perf_counter() - t0)
    return float(np.median(times[1]) / np.median(times[0]))


def main() -> None:
    import torch

    from run_record import RunRecord
    from throughput import station_name, station_probes, synthetic_parts

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--station-anomaly", default="padim,patchcore", help="the stations' anomaly heads")
    parser.add_argument("--seconds", type=float, default=6.0, help="alternating calls per pair and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--n-train", type=int, default=100)
    parser.add_argument("--out", default=str(HERE / "results" / "station_ratio.json"))
    args = parser.parse_args()
    record = RunRecord()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # the parts and bundles of throughput.py --station, made the same way
        dataset, images = synthetic_parts(folder, args.size, args.n_train)
        out, probes = station_probes(dataset, images, folder, args)
        calls = {(model, row): call for model, row, call, _ in probes}
        pairs = [
            (name, label, what)
            for name in (station_name(h) for h in args.station_anomaly.split(","))
            for label in ("fp32", "int8")
            for what in ("good", "defects")
        ]
        ratios: dict[str, list[float]] = {f"{n} {label} {w}": [] for n, label, w in pairs}
        for number in range(args.rounds):
            print(f"round {number + 1} of {args.rounds}", flush=True)
            for name, label, what in pairs:
                row = f"{label} inspect_many b8 {what}"
                ratio = paired_ratio(calls[("padim", row)], calls[(name, row)], args.seconds)
                ratios[f"{name} {label} {what}"].append(ratio)
    print("station / anomaly-only, per part at batch 8 | median of rounds | range | target <= 1.25x")
    summary = {}
    for key, values in ratios.items():
        median = float(np.median(values))
        summary[key] = {"median": median, "min": min(values), "max": max(values), "rounds": values}
        verdict = "met" if median <= 1.25 else "NOT met"
        print(f"{key:34s} | {median:.3f} | {min(values):.3f}-{max(values):.3f} | {verdict}")
    outcomes = {k: v for k, v in out.items() if "outcomes" in k}
    like = bool(out["like_for_like"])
    print(
        "like for like (every good part passes and no defective part passes, under both models): "
        + ("yes" if like else "NO: the rows do not time what they are named; see the outcomes in the JSON")
    )
    record.write(args.out, args, ratios=summary, outcomes=outcomes, like_for_like=like)


if __name__ == "__main__":
    main()

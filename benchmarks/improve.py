"""Benchmarks of issue 16: drift monitoring (and, with --part, re-inspection on Ray and the retraining loop).

drift (default part):
  A PaDiM is trained on magnetic_tile with 40% of the good training images held out, calibrated
  on them for a 1% false-reject target (which stores the monitor's reference) and exported. The
  stream is the line simulator drawing unseen good parts (the test split's good images) and 2%
  defective ones, inspected by the torch-free runtime, with the drift monitor observing every
  part exactly as the line's inspection stage calls it.

  (a) stable: 20,000 parts, nothing changes: count alarms (target <= 1) and warnings. Verdicts of
      the undisturbed images are computed once per image and reused (the same numbers the runtime
      gives every time); the monitor computes its statistics on every part.
  (b) drift: the light dims by 15% over 2,000 parts, the focus blurs (to a 2-px Gaussian) over
      2,000 parts, the texture coarsens over 2,000 parts (fine detail x2), each starting at part
      500 of a 4,000-part stream. The false-reject rate at each strength is measured on the good
      pool at fixed strengths (0, 0.1, ..., 1) and interpolated: the part at which it reaches
      twice the target is the deadline. Target: the first alarm comes before it and names the
      statistic that moved.
  (c) overhead: ``inspect_many`` at batch 8 with and without the monitor, interleaved rounds in
      one run. Target: <= 5% more time per part.

    python benchmarks/improve.py [--work DIR] [--stable 20000] [--part drift]

Prints tables and writes benchmarks/results/improve_<part>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DATASETS = HERE.parent.parent / "shared" / "datasets"
DRIFTS = (("dim", 0.15), ("blur", 2.0), ("texture", 1.0))
RAMP, START, DRIFT_PARTS = 2000, 500, 4000
TARGET_FRR = 0.01


def load_avg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def prepare_model(work: Path, dataset: Path) -> Path:
    """Train, calibrate (storing the monitor reference) and export, unless already done in ``work``."""
    from flawscope.decide.workflow import calibrate_bundle
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.train import train

    deploy = work / "deploy"
    if (deploy / "manifest.json").is_file():
        return deploy
    result = train(dataset, work / "bundle", model="padim", holdout=0.4)
    calibrate_bundle(
        work / "bundle", result.holdout_images, target_frr=TARGET_FRR, names=result.holdout_paths
    )
    export_bundle(work / "bundle", deploy)
    return deploy


def stream_dataset(work: Path, dataset: Path) -> Path:
    """An MVTec-layout folder of links: the test split's good images as the simulator's good pool."""
    from flawscope.data.datasets import load_dataset

    root = work / "stream"
    if root.is_dir():
        return root
    loaded = load_dataset(dataset)
    for sample in (*loaded.test_good, *loaded.test_defect):
        kind = "good" if sample.label == 0 else sample.defect_type
        folder = root / ("train" if kind == "good" else "test") / kind
        folder.mkdir(parents=True, exist_ok=True)
        (folder / Path(sample.path).name).symlink_to(sample.path)
    return root


def new_monitor(inspector: Any, events: list[Any]) -> Any:
    from flawscope.monitor import DriftMonitor, reference_of

    reference = reference_of(inspector.bundle.manifest)
    assert reference is not None, "the bundle has no monitoring reference"
    return DriftMonitor(reference, inspector.thresholds.review, listeners=[events.append])


def bench_stable(inspector: Any, stream: Path, parts: int) -> dict[str, Any]:
    from flawscope.acquire import SimSource

    events: list[Any] = []
    monitor = new_monitor(inspector, events)
    cache: dict[str, Any] = {}
    outcomes: Counter[str] = Counter()
    started = time.perf_counter()
    batch: list[Any] = []
    source = SimSource(stream, rate=0, defect_ratio=0.02, count=parts, seed=7, prefix="stable")

    def flush() -> None:
        missing = [f for f in batch if f.meta["path"] not in cache]
        if missing:
            for frame, verdict in zip(
                missing, inspector.inspect_many([f.image for f in missing]), strict=True
            ):
                cache[frame.meta["path"]] = verdict
        verdicts = [cache[f.meta["path"]] for f in batch]
        outcomes.update(v.outcome.value for v in verdicts)
        monitor.observe_many([f.image for f in batch], verdicts, [f.part_id for f in batch])
        batch.clear()

    for frame in source:
        batch.append(frame)
        if len(batch) == 8:
            flush()
    if batch:
        flush()
    summary = monitor.summary()
    alarms = [e for e in events if e.level == "alarm"]
    warnings = [e for e in events if e.level == "warning"]
    return {
        "parts": parts,
        "seconds": round(time.perf_counter() - started, 1),
        "outcomes": dict(outcomes),
        "charts": list(monitor.statistics),
        "skipped": summary.skipped,
        "limits_L": {s.name: [round(s.warning_limit, 3), round(s.alarm_limit, 3)] for s in summary.stats},
        "alarms": len(alarms),
        "warnings": len(warnings),
        "events": [e.to_dict() for e in events],
        "final_shifts_sd": {s.name: round(s.shift_sd, 3) for s in summary.stats},
        "target_max_alarms": 1,
    }


def bench_replicates(inspector: Any, stream_root: Path, streams: int, parts: int) -> dict[str, Any]:
    """False alarms over many stable streams, replaying each pool image's statistics and verdict.

    Every image of the simulator's pool is inspected and measured once; each stream then draws
    parts from the pool as the simulator does (2% defective) and feeds the monitor the drawn
    image's statistics and verdict, which is exactly what it would see (nothing is perturbed).
    """
    import logging

    from flawscope.data.datasets import load_dataset, read_samples
    from flawscope.monitor import ImageStatistics

    loaded = load_dataset(stream_root)
    compute = ImageStatistics()
    pools = []
    for samples in (loaded.train, loaded.test_defect):
        images = read_samples(samples, masks=False).images
        pools.append((np.stack([compute(im) for im in images]), inspector.inspect_many(images)))
    alarms, warnings, statistics = [], [], Counter()
    level = logging.getLogger("flawscope.monitor").level
    logging.getLogger("flawscope.monitor").setLevel(logging.ERROR)
    try:
        for seed in range(streams):
            rng = np.random.default_rng(1000 + seed)
            events: list[Any] = []
            monitor = new_monitor(inspector, events)
            for _ in range(parts):
                stats, verdicts = pools[1] if rng.random() < 0.02 else pools[0]
                j = int(rng.integers(len(verdicts)))
                monitor.observe_stats(stats[j], verdicts[j])
            alarms.append(sum(e.level == "alarm" for e in events))
            warnings.append(sum(e.level == "warning" for e in events))
            statistics.update(f"{e.statistic}/{e.detector}" for e in events if e.level == "alarm")
    finally:
        logging.getLogger("flawscope.monitor").setLevel(level)
    return {
        "streams": streams,
        "parts_each": parts,
        "alarms_per_stream": alarms,
        "streams_with_more_than_one_alarm": sum(a > 1 for a in alarms),
        "mean_alarms": round(float(np.mean(alarms)), 3),
        "mean_warnings": round(float(np.mean(warnings)), 2),
        "alarm_statistics": dict(statistics),
    }


def frr_curve(inspector: Any, good: list[np.ndarray], kind: str, amount: float) -> list[tuple[float, float]]:
    from flawscope.acquire.perturb import apply_perturbation

    curve = []
    for strength in np.linspace(0.0, 1.0, 11):
        scores = inspector.score_many([apply_perturbation(im, kind, amount * strength) for im in good]).scores
        curve.append((float(strength), float((scores >= inspector.thresholds.reject).mean())))
    return curve


def deadline(curve: list[tuple[float, float]]) -> float | None:
    """Strength at which the FRR first reaches twice the target (linear interpolation), None if never."""
    limit = 2 * TARGET_FRR
    for (s0, f0), (s1, f1) in itertools.pairwise(curve):
        if f1 >= limit:
            return s1 if f1 == f0 else s0 + (s1 - s0) * max(0.0, (limit - f0)) / (f1 - f0)
    return None


def bench_drift(
    inspector: Any, stream: Path, good: list[np.ndarray], kind: str, amount: float, seed: int
) -> dict[str, Any]:
    from flawscope.acquire import SimSource
    from flawscope.acquire.perturb import Perturbation

    curve = frr_curve(inspector, good, kind, amount)
    strength_due = deadline(curve)
    part_due = None if strength_due is None else START + strength_due * RAMP
    events: list[Any] = []
    monitor = new_monitor(inspector, events)
    drift = Perturbation(kind, amount, RAMP, START)
    source = SimSource(
        stream, rate=0, defect_ratio=0.02, count=DRIFT_PARTS, seed=seed, prefix=kind, drift=drift
    )
    batch: list[Any] = []
    index_of: dict[str, int] = {}
    for index, frame in enumerate(source):
        index_of[frame.part_id] = index
        batch.append(frame)
        if len(batch) == 8 or index == DRIFT_PARTS - 1:
            verdicts = inspector.inspect_many([f.image for f in batch])
            monitor.observe_many([f.image for f in batch], verdicts, [f.part_id for f in batch])
            batch.clear()
    first_alarm = next((e for e in events if e.level == "alarm"), None)
    first_warning = next((e for e in events if e.level == "warning"), None)
    alarm_part = None if first_alarm is None else index_of[first_alarm.part_id]
    return {
        "kind": kind,
        "amount": amount,
        "ramp_parts": RAMP,
        "start_part": START,
        "frr_by_strength": curve,
        "frr_2x_target_at_strength": strength_due,
        "frr_2x_target_at_part": part_due,
        "first_warning": None if first_warning is None else first_warning.to_dict(),
        "first_warning_part": None if first_warning is None else index_of[first_warning.part_id],
        "first_alarm": None if first_alarm is None else first_alarm.to_dict(),
        "first_alarm_part": alarm_part,
        "alarm_strength": None if alarm_part is None else drift.strength(alarm_part),
        "alarm_before_deadline": alarm_part is not None and (part_due is None or alarm_part < part_due),
        "events": [e.to_dict() for e in events],
    }


def bench_overhead(inspector: Any, good: list[np.ndarray], rounds: int = 5) -> dict[str, Any]:
    events: list[Any] = []
    monitor = new_monitor(inspector, events)
    images = (good * 4)[:400]
    batches = [images[i : i + 8] for i in range(0, len(images), 8)]
    for chunk in batches[:3]:
        inspector.inspect_many(chunk)

    inside: list[float] = []

    def run(with_monitor: bool) -> float:
        started = time.perf_counter()
        spent = 0.0
        for chunk in batches:
            verdicts = inspector.inspect_many(chunk)
            if with_monitor:
                began = time.perf_counter()
                monitor.observe_many(chunk, verdicts)
                spent += time.perf_counter() - began
        elapsed = time.perf_counter() - started
        if with_monitor:
            inside.append(spent / (elapsed - spent))
        return elapsed / len(images) * 1000

    bare, monitored = [], []
    for _ in range(rounds):
        bare.append(run(False))
        monitored.append(run(True))
    stats_ms = []
    for image in images[:200]:
        started = time.perf_counter()
        monitor._compute(image)
        stats_ms.append((time.perf_counter() - started) * 1000)
    ratio = float(np.median(monitored) / np.median(bare))
    return {
        "parts_per_round": len(images),
        "rounds": rounds,
        "bare_ms_per_part": [round(v, 3) for v in bare],
        "monitored_ms_per_part": [round(v, 3) for v in monitored],
        "median_ratio": round(ratio, 4),
        "monitor_share_of_inspection_percent": [round(v * 100, 2) for v in inside],
        "added_percent": round((ratio - 1) * 100, 2),
        "image_stats_ms_median": round(float(np.median(stats_ms)), 4),
        "target_added_percent": 5.0,
    }


def part_drift(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from flawscope.data.datasets import load_dataset, read_samples
    from flawscope.runtime import Inspector

    dataset = DATASETS / "magnetic_tile"
    load_before = load_avg()
    started = time.perf_counter()
    deploy = prepare_model(work, dataset)
    stream = stream_dataset(work, dataset)
    inspector = Inspector.load(deploy)
    good = read_samples(load_dataset(dataset).test_good, masks=False).images
    out: dict[str, Any] = {"dataset": "magnetic_tile", "model": "padim", "bundle_version": inspector.version}
    out["overhead"] = bench_overhead(inspector, good)
    print(f"overhead: +{out['overhead']['added_percent']:.2f}% per part (load {load_avg()})")
    out["stable"] = bench_stable(inspector, stream, args.stable)
    print(
        f"stable {args.stable} parts: {out['stable']['alarms']} alarms, {out['stable']['warnings']} warnings"
    )
    out["stable_replicates"] = bench_replicates(inspector, stream, 20, args.stable)
    rep = out["stable_replicates"]
    print(f"stable replicates: {rep['alarms_per_stream']} alarms per {args.stable}-part stream")
    out["drift"] = []
    for seed, (kind, amount) in enumerate(DRIFTS, start=11):
        row = bench_drift(inspector, stream, good, kind, amount, seed)
        out["drift"].append(row)
        alarm = row["first_alarm"]
        print(
            f"{kind} {amount}: FRR 2x target at part {row['frr_2x_target_at_part']}; first alarm at part "
            f"{row['first_alarm_part']} ({alarm['statistic'] if alarm else '-'}); "
            f"before: {row['alarm_before_deadline']}"
        )
    out["load_avg"] = [load_before, load_avg()]
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["drift"], default="drift")
    parser.add_argument(
        "--work", type=Path, default=None, help="Working folder (kept; reused if it has a model)."
    )
    parser.add_argument("--stable", type=int, default=20_000, help="Parts in the stable stream.")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="flawscope-improve-"))
    work.mkdir(parents=True, exist_ok=True)
    out = part_drift(args, work)
    out["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    out["date"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    (HERE / "results").mkdir(exist_ok=True)
    target = HERE / "results" / f"improve_{args.part}.json"
    target.write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()

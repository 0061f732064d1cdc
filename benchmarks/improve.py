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

ray: 10,000 archived images re-inspected locally and on a local Ray head (verdicts, per-core
  throughput, a worker killed mid-job, the store's write rate).

    python benchmarks/improve.py --part ray [--images 10000] [--work DIR]

loop: the loop closed on magnetic_tile with one defect type (``--new-type``, default uneven) held
  back. (1) deploy: PaDiM trained on the base set (no new type), calibrated for a 1% false-reject
  target with a 5% review band; (2) the line simulator runs ``--parts`` parts (30% defective,
  drawn from half of the test split's good images, half of the new type's and 10 of each old
  type's), images stored, ``--review-sample`` of passes sampled for review; (3) simulated operators,
  seeing the ground truth, work through ``flawscope serve``'s REST API as the web app does: they
  review every reject, flag half of the escapes as found at assembly, and work the review queue
  (flagged, review band, random sample) until it is empty, outlining each defect (its
  ground-truth mask) as they would draw it; (4) ``flawscope feedback export``; (5) retrain: the
  base model's own kind (good parts only), with ``--task`` a model that learns from the reviewed
  defects (``--station``: with a PaDiM head), and a deliberately worse candidate (the live model
  recalibrated to reject 30% of good parts); (6) registry, ``compare_models`` on the held-out half
  (never reviewed, never trained on: the other half of the new type, good images and the old
  types' remaining images) with the default gates; the worse candidate and then the chosen one
  (``--task``'s, else the good-parts one) put up for promotion.
  Targets: recall on the new type >= 90% with the false-reject bound not above the live model's;
  the worse candidate refused.

    python benchmarks/improve.py --part loop [--task mixed [--station]] [--skip-anomaly] [--work DIR]

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
from dataclasses import asdict
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


# ------------------------------------------------------------------------------------ ray part


def start_ray_head(cpus: int) -> tuple[Any, str, Path]:
    """A Ray head on 127.0.0.1 (no dashboard) in its own process group: ``(process, address, temp)``."""
    import shutil
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    temp = Path(tempfile.mkdtemp(prefix="fsray-", dir="/tmp"))
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block"]
    command += ["--node-ip-address=127.0.0.1", f"--port={port}", f"--num-cpus={cpus}"]
    command += ["--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"]
    process = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if list(temp.glob("session_*/sockets/raylet*")):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return process, f"127.0.0.1:{port}", temp
            except OSError:
                pass
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    shutil.rmtree(temp, ignore_errors=True)
    raise RuntimeError("the Ray head did not start")


def stop_ray_head(process: Any, temp: Path) -> None:
    import shutil
    import signal

    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
    process.wait(timeout=10)
    shutil.rmtree(temp, ignore_errors=True)


def ray_workers(process: Any) -> list[tuple[int, str]]:
    """The head's Python worker processes: ``ray::`` children of its raylet."""
    import subprocess

    listing = subprocess.run(["ps", "-eo", "pid,ppid,pgid,args"], capture_output=True, text=True).stdout
    rows = {int(r[0]): r for r in (line.split(None, 3) for line in listing.splitlines()[1:]) if len(r) == 4}
    group = str(process.pid)
    return [
        (pid, r[3])
        for pid, r in rows.items()
        if r[3].startswith("ray::") and "Agent" not in r[3] and rows.get(int(r[1]), ("", "", ""))[2] == group
    ]


def build_archive(root: Path, dataset: Path, total: int, halves: int = 2) -> list[Path]:
    """``total`` archived images (links to dataset images, each its own file), in ``halves`` folders."""
    from flawscope.data.datasets import load_dataset

    loaded = load_dataset(dataset)
    sources = [Path(s.path) for s in (*loaded.train, *loaded.test)]
    parts = [root / f"half-{h}" for h in range(halves)]
    if all(p.is_dir() for p in parts) and sum(len(list(p.rglob("*.*"))) for p in parts) == total:
        return parts
    for n in range(total):
        folder = parts[n % halves] / f"2026-11-{1 + n // 1000:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"part-{n:06d}{sources[n % len(sources)].suffix}"
        if not target.exists():
            try:
                os.link(sources[n % len(sources)], target)
            except OSError:  # another file system: a symbolic link reads the same
                target.symlink_to(sources[n % len(sources)])
    return parts


def store_write_rate(path: Path, rows: int = 10_000) -> float:
    """Results written per second into a fresh SQLite results store, in chunks of 64 as the driver does."""
    from flawscope.reinspect.store import ResultStore, Scope
    from flawscope.reinspect.worker import ChunkResult

    scope = Scope("/archive", "m" * 64, 1, "m.t1", "rate")
    batch = [
        ChunkResult(f"d/{i:07d}.png", "s" * 64, "pass", 1.0, 0.5, 0, "score 1 < 2", "w:1")
        for i in range(rows)
    ]
    with ResultStore.open(f"sqlite:///{path}") as store:
        began = time.perf_counter()
        for i in range(0, rows, 64):
            store.write(scope, batch[i : i + 64])
        return round(rows / (time.perf_counter() - began), 1)


def part_ray(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import logging

    from flawscope.reinspect.run import reinspect
    from flawscope.reinspect.store import ResultStore

    logging.getLogger("ray").setLevel(logging.ERROR)
    dataset = DATASETS / "magnetic_tile"
    started = time.perf_counter()
    deploy = prepare_model(work, dataset)
    halves = build_archive(work / "archive", dataset, args.images)
    cpus = os.cpu_count() or 2
    db = work / "ray-bench"
    if db.exists():
        import shutil

        shutil.rmtree(db)
    db.mkdir()
    out: dict[str, Any] = {"images": args.images, "cpus": cpus, "load_avg": [load_avg()], "runs": []}
    process, address, temp = start_ray_head(cpus)
    try:
        totals: dict[str, list[float]] = {"local": [0, 0.0], "ray": [0, 0.0], "local_1thread": [0, 0.0]}
        order = [("local", "ray"), ("ray", "local")]
        for half, engines in zip(halves, order, strict=True):
            for engine in engines:
                url = f"sqlite:///{db / f'{engine}.db'}"
                kwargs = {"engine": "ray", "address": address} if engine == "ray" else {}
                summary = reinspect(half, deploy, url, chunk_size=64, **kwargs)
                totals[engine][0] += summary.scored
                totals[engine][1] += summary.seconds
                out["runs"].append(
                    {
                        "half": half.name,
                        "engine": engine,
                        "images": summary.scored,
                        "seconds": round(summary.seconds, 2),
                        "images_per_s": round(summary.throughput, 2),
                        "load_avg": load_avg(),
                    }
                )
                print(f"{half.name} {engine}: {summary.throughput:.1f} images/s (load {load_avg()})")
        # The per-core reference: one local process on one thread, on a slice of the first half.
        from flawscope.reinspect import worker

        slice_keys = sorted(p.relative_to(halves[0]).as_posix() for p in halves[0].rglob("*.*"))[:1000]
        payload = worker.bundle_payload(deploy)
        worker.score_chunk(payload, str(halves[0]), slice_keys[:16], threads=1)
        began = time.perf_counter()
        for i in range(0, len(slice_keys), 64):
            worker.score_chunk(payload, str(halves[0]), slice_keys[i : i + 64], threads=1)
        one = len(slice_keys) / (time.perf_counter() - began)
        rates = {k: v[0] / v[1] for k, v in totals.items() if v[1] > 0}
        out["images_per_s"] = {k: round(v, 2) for k, v in rates.items()}
        out["local_1thread_images_per_s"] = round(one, 2)
        out["per_core_ratio_ray_vs_local"] = round((rates["ray"] / cpus) / (rates["local"] / cpus), 3)
        out["per_core_ratio_ray_vs_local_1thread"] = round((rates["ray"] / cpus) / one, 3)
        # Identical verdicts: every image, both engines.
        scope_rows = {}
        for engine in ("local", "ray"):
            with ResultStore.open(f"sqlite:///{db / f'{engine}.db'}") as store:
                rows = store._engine.connect().exec_driver_sql(
                    "select archive, image_key, outcome, score, image_sha256 from reinspections"
                )
                scope_rows[engine] = {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}
        local_rows, ray_rows = scope_rows["local"], scope_rows["ray"]
        differing = [k for k in local_rows if ray_rows.get(k) != local_rows[k]]
        out["identical"] = {
            "local_results": len(local_rows),
            "ray_results": len(ray_rows),
            "differing": len(differing),
            "missing_on_ray": len(set(local_rows) - set(ray_rows)),
        }
        print(f"identical verdicts and scores: {len(local_rows) - len(differing)} of {len(local_rows)}")
        # A worker killed mid-job: the first half again, into a fresh store.
        killed: list[int] = []

        def kill(done: int, _found: int) -> None:
            if killed or done < args.images // 10:
                return
            busy = [pid for pid, title in ray_workers(process) if "score_chunk" in title]
            victims = busy or [pid for pid, _ in ray_workers(process)]
            if victims:
                killed.append(victims[0])
                os.kill(victims[0], 9)

        url = f"sqlite:///{db / 'kill.db'}"
        summary = reinspect(
            halves[0], deploy, url, engine="ray", address=address, chunk_size=64, progress=kill
        )
        with ResultStore.open(url) as store:
            keys = [
                r[0] for r in store._engine.connect().exec_driver_sql("select image_key from reinspections")
            ]
        expected = {k for (archive, k) in local_rows if archive == str(halves[0].absolute())}
        out["worker_killed"] = {
            "killed_pid": killed[0] if killed else None,
            "images": summary.images,
            "results": len(keys),
            "distinct": len(set(keys)),
            "missing": len(expected - set(keys)),
            "seconds": round(summary.seconds, 2),
        }
        print(f"worker killed: {out['worker_killed']}")
        # What the driver does per image (walk + done check), and the store's bytes per result.
        from flawscope.reinspect.run import walk_archive

        began = time.perf_counter()
        listed = sum(1 for _ in walk_archive(halves[0]))
        out["walk_images_per_s"] = round(listed / (time.perf_counter() - began), 1)
        sizes = {e: (db / f"{e}.db").stat().st_size for e in ("local", "ray")}
        out["store_bytes_per_result"] = round(sizes["local"] / max(1, len(local_rows)), 1)
        out["store_rows_per_s"] = store_write_rate(db / "rate.db")
        archive_bytes = sum(p.stat().st_size for h in halves for p in h.rglob("*.*"))
        out["archive_bytes_per_image"] = round(archive_bytes / args.images, 1)
    finally:
        stop_ray_head(process, temp)
    out["load_avg"].append(load_avg())
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


# ----------------------------------------------------------------------------------- loop part


def _link_dataset(root: Path, folders: dict[str, list[str]]) -> Path:
    """An MVTec-layout folder of links: ``{"train/good": [paths], "test/uneven": [...]}``."""
    if root.is_dir():
        return root
    for folder, paths in folders.items():
        target = root / folder
        target.mkdir(parents=True, exist_ok=True)
        for path in paths:
            (target / Path(path).name).symlink_to(path)
    return root


def _halves(items: list[Any]) -> tuple[list[Any], list[Any]]:
    return items[0::2], items[1::2]


def loop_data(work: Path, new: str) -> dict[str, Path]:
    """Folders of the loop: the base set (no ``new``), the line's stream, and the held-out evaluation set."""
    from flawscope.data.datasets import load_dataset

    full = load_dataset(DATASETS / "magnetic_tile")
    old = [t for t in full.defect_types if t != new]
    by_type = {t: [s.path for s in full.test_defect if s.defect_type == t] for t in full.defect_types}
    good_stream, good_eval = _halves([s.path for s in full.test_good])
    new_stream, new_eval = _halves(by_type[new])
    base = {"train/good": [s.path for s in full.train], "test/good": good_eval[:40]}
    base.update({f"test/{t}": by_type[t][:20] for t in old})
    # The plant's base set keeps its defects' outlines (a candidate that learns labels uses them).
    masks = {s.path: s.mask_path for s in full.test_defect}
    base.update({f"ground_truth/{t}": [masks[p] for p in by_type[t][:20] if masks.get(p)] for t in old})
    stream = {"train/good": good_stream, f"test/{new}": new_stream}
    stream.update({f"test/{t}": by_type[t][20:30] for t in old})
    evaluation = {"test/good": good_eval, f"test/{new}": new_eval}
    evaluation.update({f"test/{t}": by_type[t][30:] for t in old})
    evaluation["train/good"] = good_eval[:1]  # a dataset needs a train split; never used here
    return {
        "base": _link_dataset(work / "loop-base", base),
        "stream": _link_dataset(work / "loop-stream", stream),
        "eval": _link_dataset(work / "loop-eval", evaluation),
    }


def _truth() -> dict[str, tuple[str, str, str | None]]:
    """SHA-256 of every magnetic_tile image -> (``good``/``defect``, type, mask): the operators' eyes."""
    from flawscope.data.datasets import load_dataset
    from flawscope.data.imageio import sha256_file

    full = load_dataset(DATASETS / "magnetic_tile")
    return {
        sha256_file(s.path): ("good" if s.label == 0 else "defect", s.defect_type, s.mask_path)
        for s in (*full.train, *full.test)
    }


def _regions(mask_path: str | None) -> list[list[list[float]]]:
    """The outline an operator draws around the defect: the ground-truth mask's contours as fractions."""
    import cv2

    if not mask_path:
        return []
    mask = cv2.imread(mask_path, cv2.IMREAD_GRAYSCALE)
    if mask is None or not mask.any():
        return []
    height, width = mask.shape
    contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in sorted(contours, key=cv2.contourArea, reverse=True)[:50]:
        points = cv2.approxPolyDP(contour, 1.0, True).reshape(-1, 2)
        if len(points) >= 3:
            polygons.append([[float(x) / width, float(y) / height] for x, y in points[:2000]])
    return polygons


def _serve(audit: str, images: Path, bundle: Path, rate: float) -> tuple[Any, str]:
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "flawscope.cli", "serve", "--audit", audit, "--images", str(images)]
    command += [
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--bundle",
        str(bundle),
        "--review-sample",
        str(rate),
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process, f"http://127.0.0.1:{port}"
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(
                    f"flawscope serve exited: {process.stderr.read().decode()[-2000:]}"
                ) from None
            time.sleep(0.5)
    raise RuntimeError("flawscope serve did not start")


def review_through_the_api(
    audit_url: str, images: Path, bundle: Path, rate: float, new: str
) -> dict[str, Any]:
    """Operators review rejects, work the review queue and report escapes, through the web app's REST API.

    The simulated operators see the truth (the dataset's labels) and outline defects as their
    ground-truth masks; everything they do goes through the same API as the web app.
    """
    import signal

    import httpx

    from flawscope.audit import AuditLog
    from flawscope.web.database import WebDB
    from flawscope.web.users import create_token, create_user

    db = WebDB(audit_url)
    create_user(db, "olga", "operator-password-1", "operator", created_by="bench")
    token, _ = create_token(db, "olga", "loop benchmark")
    db.close()
    truth = _truth()
    with AuditLog.open(audit_url, read_only=True) as audit:  # the world: which image each part was
        sha_of = {r.seq: r.image_sha256 for r in audit.records() if r.kind == "inspection"}
    process, base = _serve(audit_url, images, bundle, rate)
    counts: Counter[str] = Counter()
    try:
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        done: set[int] = set()

        def review(seq: int, reason: str) -> None:
            if seq in done:
                return
            done.add(seq)
            kind, category, mask = truth.get(sha_of.get(seq, ""), ("?", "", None))
            if kind == "?":
                counts["unknown_image"] += 1
                return
            body: dict[str, Any] = {"ref_seq": seq, "verdict": kind, "request_id": f"loop-{seq:08d}"}
            if kind == "defect":
                body["category"] = category
                body["regions"] = _regions(mask)
            client.post("/api/v1/reviews", json=body).raise_for_status()
            counts[f"{reason}:{category}" if kind == "defect" else f"{reason}:good"] += 1

        # 1. People look at what the line rejected (newest first, page by page).
        before: int | None = None
        while True:
            params: dict[str, Any] = {"outcome": "fail", "limit": 500}
            if before is not None:
                params["before_seq"] = before
            page = client.get("/api/v1/inspections", params=params).raise_for_status().json()
            for item in page["items"]:
                review(item["seq"], "reject")
            before = page.get("next_before_seq")
            if not before:
                break
        # 2. Half of the escapes are found downstream (at assembly) and flagged for review.
        for seq, sha in sorted(sha_of.items()):
            kind = truth.get(sha, ("?", "", None))[0]
            if kind == "defect" and seq not in done and seq % 2 == 0:
                record = client.get(f"/api/v1/inspections/{seq}").raise_for_status().json()
                if record["outcome"] == "pass":
                    client.post(f"/api/v1/inspections/{seq}/flag", json={"note": "found at assembly"})
                    counts["flagged_escapes"] += 1
        # 3. The review queue (flagged parts, the review band, the random sample of passes) until empty.
        while True:
            queue = client.get("/api/v1/queue", params={"limit": 500}).raise_for_status().json()
            items = [i for i in queue["items"] if i["inspection"]["seq"] not in done]
            if not items:
                counts.update({f"queue_left:{k}": v for k, v in queue["counts"].items() if v})
                break
            for item in items:
                review(item["inspection"]["seq"], item["reason"])
        # A double submit is idempotent: the same request id records nothing new.
        first = min(done)
        kind, category, _ = truth[sha_of[first]]
        again = client.post(
            "/api/v1/reviews",
            json={
                "ref_seq": first,
                "verdict": kind,
                "category": category if kind == "defect" else None,
                "request_id": f"loop-{first:08d}",
            },
        )
        counts["double_submit_status"] = again.status_code
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    return dict(counts)


def part_loop(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import subprocess
    import sys

    from flawscope.acquire import SimSource
    from flawscope.audit import AuditLog
    from flawscope.bundle import read_bundle
    from flawscope.decide.workflow import calibrate_bundle
    from flawscope.export.onnx_export import export_bundle
    from flawscope.improve.retrain import retrain
    from flawscope.line import run_line
    from flawscope.models.train import train
    from flawscope.runtime import Inspector

    started = time.perf_counter()
    new = args.new_type
    loop = work / f"loop-{new}"
    loop.mkdir(parents=True, exist_ok=True)
    folders = loop_data(loop, new)
    out: dict[str, Any] = {"new_type": new, "load_avg": [load_avg()], "steps": {}}
    # 1. Deploy: a model trained before the new type existed.
    live = loop / "live"
    if not (live / "manifest.json").is_file():
        result = train(folders["base"], loop / "live-trained", model="padim", holdout=0.4)
        calibrate_bundle(
            loop / "live-trained", result.holdout_images, target_frr=TARGET_FRR, review_rate=0.05
        )
        export_bundle(loop / "live-trained", live)
    out["steps"]["deployed"] = round(time.perf_counter() - started, 1)
    # 2. The line: the new type appears among the parts; images stored, 20% of passes sampled.
    audit_url = f"sqlite:///{loop / 'audit.db'}"
    store = loop / "images"
    if args.compare_only:  # the line, the reviews and the candidates of an earlier run, judged again
        earlier: dict[str, Any] = {name: loop / name / "deployed" for name, _ in candidates_of(args)}
        missing = [str(path) for path in earlier.values() if not (path / "manifest.json").is_file()]
        if missing or not (loop / "audit.db").is_file():
            raise SystemExit(f"--compare-only needs an earlier run's audit log and candidates: {missing}")
        import shutil

        shutil.rmtree(loop / "models", ignore_errors=True)
        out["compare_only"] = True
        return _judge_loop(args, out, loop, folders, live, earlier, audit_url, started)
    for leftover in (
        loop / "audit.db",
        loop / "feedback",
        loop / "models",
        *(loop / name for name, _ in candidates_of(args)),
    ):
        if leftover.is_dir():
            import shutil

            shutil.rmtree(leftover)
        elif leftover.exists():
            leftover.unlink()
    inspector = Inspector.load(live)
    with AuditLog.open(audit_url) as audit:
        summary = run_line(
            SimSource(folders["stream"], rate=0, count=args.parts, defect_ratio=0.3, seed=5),
            inspector,
            audit,
            station="press-3",
            store_images=store,
            review_sample=args.review_sample,
        )
    out["line"] = {"parts": summary.recorded, "counts": dict(summary.counts)}
    # 3. Operators review through the web app's API; the feedback dataset is exported.
    out["reviews"] = review_through_the_api(audit_url, store, live, args.review_sample, new)
    env = dict(os.environ)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "flawscope.cli",
            "feedback",
            "export",
            str(loop / "feedback"),
            "--audit",
            audit_url,
            "--images",
            str(store),
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    # 4. Retrain: the base model's own kind (good parts only), the candidate that learns from the
    #    reviewed defects (--task), and a deliberately worse one (calibrated to reject 30% of good parts).
    made: dict[str, Any] = {}
    for name, kwargs in candidates_of(args):
        begun = time.perf_counter()
        if name == "worse":
            made[name] = worse_candidate(loop, folders["base"])
            out["steps"]["worse_s"] = round(time.perf_counter() - begun, 1)
            continue
        made[name] = retrain(
            loop / "live-trained", loop / "feedback", loop / name, data=folders["base"], **kwargs
        ).deployed
        out["steps"][f"retrain_{name}_s"] = round(time.perf_counter() - begun, 1)
        lineage = read_bundle(made[name]).manifest.lineage
        out.setdefault("lineage", {})[name] = {
            "new_classes": list(lineage.new_classes),
            "data": [{"role": d.role, "n": d.n_images, "labels": dict(d.labels)} for d in lineage.data],
            "reviews": len(lineage.reviews),
            "excluded": len(lineage.excluded),
            "notes": list(lineage.notes),
        }
    return _judge_loop(args, out, loop, folders, live, made, audit_url, started)


def _judge_loop(
    args: argparse.Namespace,
    out: dict[str, Any],
    loop: Path,
    folders: dict[str, Path],
    live: Path,
    made: dict[str, Any],
    audit_url: str,
    started: float,
) -> dict[str, Any]:
    from flawscope.audit import AuditLog
    from flawscope.improve.compare import (
        compare_models,
        labelled_from_dataset,
        labelled_from_reviews,
    )
    from flawscope.improve.gates import GateConfig
    from flawscope.improve.registry import ModelRegistry, PromotionRefusedError

    new = args.new_type
    # 5. Registry; each candidate compared with the live model on the held-out labelled parts (the
    #    reviewed parts are left out: the candidates were trained on them), gates; the worse one and
    #    then the chosen one are put up for promotion.
    labelled = labelled_from_dataset(folders["eval"])
    held_out = {item.path: item.label for item in labelled}
    gates = GateConfig.from_file(args.gates) if args.gates else GateConfig()
    out["gates"] = asdict(gates)
    chosen = args.task or "anomaly"
    results: dict[str, Any] = {"refusals": {}}
    with AuditLog.open(audit_url) as audit:
        # Judged again: a registry of its own (the first run's promotions stay in the audit log).
        station = "press-3" if not args.compare_only else f"press-3-recompared-{int(time.time())}"
        registry = ModelRegistry(loop / "models", audit, station)
        live_v = registry.register(live, "bench", "deployed before the new type").version
        registry.promote(live_v, "bench", "commissioning")
        reviewed = labelled_from_reviews(audit.records())
        pool = labelled
        versions = {}
        for name, result in made.items():
            versions[name] = registry.register(result, "bench").version
            begun = time.perf_counter()
            comparison = compare_models(
                registry.path_of(live_v), registry.path_of(versions[name]), pool, config=gates
            )
            out["steps"][f"compare_{name}_s"] = round(time.perf_counter() - begun, 1)
            registry.save_comparison(versions[name], comparison, "bench")
            results[name] = comparison.to_dict() | {"promoted": False}
            if comparison.live is not None and comparison.candidate is not None:
                results[name]["held_out"] = {
                    "live": held_out_rates(comparison.live.stopped, held_out, new),
                    "candidate": held_out_rates(comparison.candidate.stopped, held_out, new),
                }
        for name in ("worse", chosen):
            try:
                registry.promote(versions[name], "bench", f"the {name} candidate after its comparison")
                results[name]["promoted"] = True
            except PromotionRefusedError as exc:
                results["refusals"][name] = str(exc)
        out["live_version_after"] = registry.live_version()
        out["versions"] = versions
        out["audit_verified"] = audit.verify().ok
    out["comparisons"] = results
    out["reviewed_labelled"] = dict(Counter(item.label for item in reviewed))
    out["held_out_labelled"] = dict(Counter(held_out.values()))
    out["summary"] = loop_summary(results, chosen, new)
    out["load_avg"].append(load_avg())
    out["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out["summary"], indent=1))
    return out


def candidates_of(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """The candidates of the loop: name -> keyword arguments of ``retrain`` (``worse``: see below)."""
    found: list[tuple[str, dict[str, Any]]] = []
    if not args.skip_anomaly:
        found.append(("anomaly", {}))
    if args.task:
        params: dict[str, Any] = {"anomaly": "padim"} if args.station else {}
        if args.seed is not None:  # the candidate's seed (validation split, heads' weights, batches)
            params["seed"] = args.seed
        found.append((args.task, {"task": args.task, "params": params, "band_rule": args.band_rule}))
    found.append(("worse", {}))
    return found


def worse_candidate(loop: Path, base: Path) -> Path:
    """A deliberately worse candidate: the live model recalibrated to reject 30% of good parts.

    It stops more defects than the live model, and far more good parts: the false-reject gate
    must refuse it. Calibrated on the live model's own held-out good images (never trained on).
    """
    import shutil

    from flawscope.bundle import read_bundle
    from flawscope.data.datasets import load_dataset
    from flawscope.data.imageio import read_image
    from flawscope.decide.workflow import calibrate_bundle
    from flawscope.export.onnx_export import export_bundle

    trained = loop / "worse" / "trained"
    shutil.copytree(loop / "live-trained", trained)
    fitted = {Path(f.path).name for f in read_bundle(trained).manifest.training.files}
    held = [s.path for s in load_dataset(base).train if Path(s.path).name not in fitted]
    calibrate_bundle(trained, [read_image(p) for p in held], target_frr=0.3, review_rate=0.05, names=held)
    return export_bundle(trained, loop / "worse" / "deployed").path


def held_out_rates(stopped: dict[str, bool], held_out: dict[str, str], new: str) -> dict[str, Any]:
    """Recall on the new type and on the old ones, and the false-reject rate, on the held-out parts alone."""
    from flawscope.improve.compare import Rate

    def rate(paths: list[str]) -> dict[str, Any]:
        r = Rate.of(sum(stopped[p] for p in paths), len(paths), 0.95)
        return {"k": r.k, "n": r.n, "rate": r.rate, "low": r.low, "high": r.high, "upper": r.upper}

    judged = [p for p in held_out if p in stopped]
    return {
        "recall_new": rate([p for p in judged if held_out[p] == new]),
        "recall_old": rate([p for p in judged if held_out[p] not in ("good", new)]),
        "frr": rate([p for p in judged if held_out[p] == "good"]),
    }


def loop_summary(results: dict[str, Any], chosen: str, new: str) -> dict[str, Any]:
    """The loop's targets against what was measured."""
    summary: dict[str, Any] = {"chosen": chosen, "target_recall_new_type": 0.90}
    for name in (n for n in results if n != "refusals"):
        held = results[name].get("held_out") or {}
        summary[name] = {
            "passed_gates": results[name]["passed"],
            "promoted": results[name]["promoted"],
            "failed_gates": [g["name"] for g in results[name].get("gates", []) if not g["passed"]],
            "held_out_live": {k: v["rate"] for k, v in held.get("live", {}).items()},
            "held_out_candidate": {k: v["rate"] for k, v in held.get("candidate", {}).items()},
            "frr_upper_live": (held.get("live") or {}).get("frr", {}).get("upper"),
            "frr_upper_candidate": (held.get("candidate") or {}).get("frr", {}).get("upper"),
            "pool_frr_upper_live": (results[name].get("live") or {}).get("frr", {}).get("upper"),
            "pool_frr_upper_candidate": (results[name].get("candidate") or {}).get("frr", {}).get("upper"),
        }
    main = summary.get(chosen, {})
    recall = main.get("held_out_candidate", {}).get("recall_new")
    summary["recall_new_type_met"] = recall is not None and recall >= 0.90
    summary["frr_bound_unchanged"] = (
        main.get("pool_frr_upper_candidate") is not None
        and main["pool_frr_upper_candidate"] <= main["pool_frr_upper_live"] + 1e-12
    )
    summary["worse_refused"] = not summary.get("worse", {}).get("promoted", True)
    summary["chosen_promoted"] = main.get("promoted", False)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["drift", "ray", "loop"], default="drift")
    parser.add_argument(
        "--new-type", default="uneven", help="magnetic_tile defect type held back (loop part)."
    )
    parser.add_argument("--parts", type=int, default=600, help="Parts on the line (loop part).")
    parser.add_argument(
        "--task",
        choices=["classify", "segment", "mixed"],
        default=None,
        help="Loop part: also retrain a model that learns from the reviewed defects, and promote it.",
    )
    parser.add_argument("--station", action="store_true", help="Loop part: --task model with a PaDiM head.")
    parser.add_argument(
        "--skip-anomaly", action="store_true", help="Loop part: no good-parts-only candidate."
    )
    parser.add_argument(
        "--band-rule",
        choices=["shared", "anomaly"],
        default="shared",
        help="Loop part, --station: how the station's heads share the review band.",
    )
    parser.add_argument(
        "--review-sample", type=float, default=0.2, help="Share of passes sampled (loop part)."
    )
    parser.add_argument(
        "--compare-only",
        action="store_true",
        help="Loop part: judge an earlier run's candidates again (same --work), no line, no retraining.",
    )
    parser.add_argument("--gates", type=Path, default=None, help="Loop part: gates as a JSON file.")
    parser.add_argument("--seed", type=int, default=None, help="Loop part, --task: the candidate's seed.")
    parser.add_argument("--images", type=int, default=10_000, help="Archive size of the ray part.")
    parser.add_argument(
        "--work", type=Path, default=None, help="Working folder (kept; reused if it has a model)."
    )
    parser.add_argument("--stable", type=int, default=20_000, help="Parts in the stable stream.")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="flawscope-improve-"))
    work.mkdir(parents=True, exist_ok=True)
    parts = {"drift": part_drift, "ray": part_ray, "loop": part_loop}
    out = parts[args.part](args, work)
    out["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    out["date"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    (HERE / "results").mkdir(exist_ok=True)
    name = args.part
    if args.part == "loop":  # one file per kind of candidate chosen
        name += f"_{args.task}" + ("_station" if args.station else "") if args.task else "_anomaly"
        name += "_anomaly_band" if args.task and args.station and args.band_rule == "anomaly" else ""
        name += "_recompared" if args.compare_only else ""  # never over an earlier full run's file
        name += f"_{args.gates.stem}" if args.gates else ""
        name += f"_seed{args.seed}" if args.seed is not None and args.task else ""
    target = HERE / "results" / f"improve_{name}.json"
    target.write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()

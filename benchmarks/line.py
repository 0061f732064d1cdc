"""Benchmarks of the inspection line: throughput, soak and crash safety.

(a) throughput: the whole line (simulated source, batched ONNX inference, SQLite audit with one
    fsync'd transaction per batch, every image stored) against bare ``inspector.inspect_many`` at
    batch 8 on the same images; target ratio >= 0.8.
(b) soak: N simulated parts through the line; RSS after warm-up and at the end (target growth
    <= 10 %) and zero lost or duplicated records (counted by part id in the audit log).
(c) crash: the line runs in a subprocess on a simulated source and is killed with SIGKILL at random
    moments; after each kill the audit log must verify and hold every part the subprocess
    published (it prints part ids only after they are committed).

The model is a PaDiM trained here on synthetic 256 px parts and exported to ONNX. Prints a table
and writes benchmarks/results/line.json.

    python benchmarks/line.py [--soak 20000] [--kills 20] [--parts 400]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build_model(work: Path, size: int) -> tuple[Path, Path]:
    """Synthetic parts, a PaDiM trained on them, thresholds just above the good training scores, ONNX."""
    from flawscope.acquire import open_source
    from flawscope.bundle import update_manifest
    from flawscope.data.synthetic import SyntheticSpec, write_dataset
    from flawscope.decide.thresholds import ThresholdHistory, Thresholds
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.train import train
    from flawscope.runtime.inspector import Inspector

    data = work / "data"
    write_dataset(data, SyntheticSpec(size=(size, size), n_train=24, n_test_good=8, n_test_defect_per_type=3))
    train(data, work / "bundle", model="padim", params={"image_size": size})
    deployed = export_bundle(work / "bundle", work / "deploy")
    probe = Inspector.load(work / "deploy")
    scores = [float(probe.score_many([f.image]).scores[0]) for f in open_source(data / "train" / "good")]
    thresholds = dataclasses.replace(Thresholds.explicit(reject=max(scores) * 1.05), version=1)
    update_manifest(deployed, thresholds=ThresholdHistory((thresholds,)))
    return data, work / "deploy"


def _stages(summary: Any) -> dict[str, dict[str, float]]:
    stages = summary.stages.items()
    return {name: {"mean_ms": round(s.mean_ms, 3), "p99_ms": round(s.p99_ms, 3)} for name, s in stages}


def bench_throughput(data: Path, bundle: Path, parts: int, work: Path, threads: int | None) -> dict[str, Any]:
    from flawscope.acquire import SimSource
    from flawscope.audit import AuditLog
    from flawscope.line import run_line
    from flawscope.runtime.inspector import Inspector

    inspector = Inspector.load(bundle, threads=threads)
    images = [f.image for f in SimSource(data, rate=0, count=parts, seed=0)]
    for _ in range(3):
        inspector.inspect_many(images[:8])

    def bare() -> float:
        started = time.perf_counter()
        for i in range(0, len(images), 8):
            inspector.inspect_many(images[i : i + 8])
        return len(images) / (time.perf_counter() - started)

    bare_before = bare()
    with AuditLog.open(f"sqlite:///{work / 'throughput.db'}") as audit:
        started = time.perf_counter()
        summary = run_line(
            SimSource(data, rate=0, count=parts, seed=0),
            inspector,
            audit,
            station="bench",
            store_images=work / "images",
            batch_size=8,
            queue_size=64,
        )
        line_rate = summary.recorded / (time.perf_counter() - started)
        assert audit.count() == parts
    bare_after = bare()
    bare_rate = (bare_before + bare_after) / 2
    return {
        "parts": parts,
        "bare_parts_per_s": round(bare_rate, 2),
        "bare_spread": [round(bare_before, 2), round(bare_after, 2)],
        "line_parts_per_s": round(line_rate, 2),
        "ratio": round(line_rate / bare_rate, 3),
        "target_ratio": 0.8,
        "stages": _stages(summary),
    }


def bench_soak(data: Path, bundle: Path, n: int, work: Path, threads: int | None) -> dict[str, Any]:
    from flawscope.acquire import SimSource
    from flawscope.audit import AuditLog
    from flawscope.line import run_line
    from flawscope.runtime.inspector import Inspector

    inspector = Inspector.load(bundle, threads=threads)
    warmup = max(200, n // 10)
    marks: dict[str, float] = {}
    seen = [0]

    def sample(record: Any) -> None:
        seen[0] += 1
        if seen[0] == warmup:
            marks["warm"] = rss_mb()

    with AuditLog.open(f"sqlite:///{work / 'soak.db'}") as audit:
        summary = run_line(
            SimSource(data, rate=0, count=n, seed=1, prefix="soak"),
            inspector,
            audit,
            station="soak",
            publishers=[sample],
            batch_size=8,
        )
        end = rss_mb()
        counts = Counter(r.part_id for r in audit.records())
        verified = audit.verify().ok
    expected = {f"soak-{i:06d}" for i in range(n)}
    lost = len(expected - set(counts))
    duplicated = sum(1 for c in counts.values() if c > 1)
    warm = marks.get("warm", float("nan"))
    return {
        "parts": n,
        "warmup_parts": warmup,
        "rss_warm_mb": round(warm, 1),
        "rss_end_mb": round(end, 1),
        "rss_growth": round((end - warm) / warm, 4),
        "target_growth": 0.10,
        "lost": lost,
        "duplicated": duplicated,
        "unexpected": len(set(counts) - expected),
        "verified": verified,
        "parts_per_s": round(summary.throughput, 2),
        "counts": dict(summary.counts),
        "stages": _stages(summary),
    }


def child(args: argparse.Namespace) -> None:
    """The line in a subprocess: prints each part id after its record is committed."""
    from flawscope.acquire import SimSource
    from flawscope.audit import AuditLog
    from flawscope.line import run_line
    from flawscope.runtime.inspector import Inspector

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    inspector = Inspector.load(args.bundle, threads=1)
    out = sys.stdout

    def publish(record: Any) -> None:
        out.write(f"{record.part_id}\n")
        out.flush()

    with AuditLog.open(args.audit) as audit:
        source = SimSource(args.dataset, rate=0, count=args.count, prefix=args.prefix, seed=args.seed)
        run_line(source, inspector, audit, station="crash", publishers=[publish], stop_event=stop)


def bench_crash(data: Path, bundle: Path, kills: int, work: Path, seed: int) -> dict[str, Any]:
    from flawscope.audit import AuditLog

    url = f"sqlite:///{work / 'crash.db'}"
    rng = random.Random(seed)
    rows = []
    for k in range(kills):
        prefix = f"run{k:03d}"
        command = [sys.executable, __file__, "--child", "--bundle", str(bundle), "--dataset", str(data)]
        command += ["--audit", url, "--prefix", prefix, "--count", "100000", "--seed", str(k)]
        with open(work / f"{prefix}.log", "wb") as log:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log)
            delay = rng.uniform(1.5, 5.0)
            time.sleep(delay)
            process.kill()
            output, _ = process.communicate()
        published = output.decode(errors="replace").split("\n")[:-1]  # the last piece may be cut off
        with AuditLog.open(url) as audit:
            result = audit.verify()
            counts = Counter(r.part_id for r in audit.records() if r.part_id.startswith(prefix + "-"))
            total = audit.count()
        missing = [p for p in published if p not in counts]
        rows.append(
            {
                "kill": k,
                "after_s": round(delay, 2),
                "published": len(published),
                "recorded": sum(counts.values()),
                "recorded_not_published": len(set(counts) - set(published)),
                "published_missing_from_log": len(missing),
                "duplicated": sum(1 for c in counts.values() if c > 1),
                "verified": result.ok,
                "log_size": total,
            }
        )
    return {
        "kills": kills,
        "all_verified": all(r["verified"] for r in rows),
        "published_missing_total": sum(r["published_missing_from_log"] for r in rows),
        "duplicated_total": sum(r["duplicated"] for r in rows),
        "published_total": sum(r["published"] for r in rows),
        "runs": rows,
    }


def table(results: dict[str, Any]) -> str:
    lines = []
    t = results.get("throughput")
    if t:
        lines.append(f"throughput   bare inspect_many b8 {t['bare_parts_per_s']:8.1f} parts/s")
        lines.append(f"             line (audit + images) {t['line_parts_per_s']:7.1f} parts/s")
        lines.append(f"             ratio {t['ratio']:.3f} (target >= {t['target_ratio']})")
    s = results.get("soak")
    if s:
        lines.append(
            f"soak         {s['parts']} parts at {s['parts_per_s']:.1f}/s; RSS {s['rss_warm_mb']:.0f} -> "
            f"{s['rss_end_mb']:.0f} MiB ({s['rss_growth']:+.1%}, target <= {s['target_growth']:.0%}); "
            f"lost {s['lost']}, duplicated {s['duplicated']}, verified {s['verified']}"
        )
    c = results.get("crash")
    if c:
        lines.append(
            f"crash        {c['kills']} kill -9: verified every time {c['all_verified']}; "
            f"{c['published_total']} published, {c['published_missing_total']} missing from the log, "
            f"{c['duplicated_total']} duplicated"
        )
    for name in ("throughput", "soak"):
        if name in results:
            stages = results[name]["stages"]
            text = ", ".join(f"{k} {v['mean_ms']:.1f}/{v['p99_ms']:.1f}" for k, v in stages.items())
            lines.append(f"{name:12s} stage ms mean/p99: {text}")
    return "\n".join(lines)


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--soak", type=int, default=20_000, help="simulated parts of the soak (0: skip)")
    parser.add_argument("--kills", type=int, default=20, help="kill -9 rounds of the crash test (0: skip)")
    parser.add_argument("--parts", type=int, default=400, help="parts of the throughput comparison (0: skip)")
    parser.add_argument("--size", type=int, default=256, help="side of the synthetic parts and the model")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "line.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--audit", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="flawscope-line-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        data, bundle = build_model(work, args.size)
        results: dict[str, Any] = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
            },
            "model": {"name": "padim", "image_size": args.size, "train_and_export_s": 0.0},
        }
        results["model"]["train_and_export_s"] = round(time.perf_counter() - started, 1)
        if args.parts:
            results["throughput"] = bench_throughput(data, bundle, args.parts, work, args.threads)
        if args.soak:
            results["soak"] = bench_soak(data, bundle, args.soak, work, args.threads)
        if args.kills:
            results["crash"] = bench_crash(data, bundle, args.kills, work, args.seed)
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

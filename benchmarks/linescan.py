"""Line-scan web: a simulated roll with known defects, inspected end to end, each defect matched to its truth.

A PaDiM bundle is trained on frames of three good rolls (seeds 1000-1002), calibrated on two
other good rolls (seeds 1500-1501) and exported; then a simulated web of ``--metres`` metres
(``websim``, another seed, ``--defects`` defects of ``--defect-mm`` mm spread along it) is
scanned by :class:`flawscope.webscan.WebScan` into a SQLite audit trail, exactly as
``flawscope web-scan run`` does. Every reported defect is matched to the true defects
(:func:`flawscope.data.webs.plan_defects`): a true defect is *detected* when one report lies within
``--match-mm`` of its centre, *split or doubled* when several do, *missed* when none does; a
report near no true defect is *false*. Position errors are the distance from the report to the
true centre. The line rate is given twice: the whole scan's (simulator, assembly, inspection,
merging, audit writes) and the runtime's alone (time inside the inspector), each as m/min at the
stated resolution. Prints a table; writes benchmarks/results/linescan.json.

    python benchmarks/linescan.py [--metres 500] [--width 256] [--mm-per-px 1] [--mm-per-row 1]
        [--frame 256] [--overlap 32] [--defects 60] [--defect-mm 6,15] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


class TimedInspector:
    """The inspector, with the time spent inside it counted (the runtime's share of the scan)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.frames = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def inspect_many(self, images: Sequence[np.ndarray | None]) -> list[Any]:
        began = time.perf_counter()
        verdicts = self.inner.inspect_many(images)
        self.seconds += time.perf_counter() - began
        self.frames += len(images)
        return verdicts


def train_bundle(args: argparse.Namespace, spec: Any, out: Path) -> dict[str, Any]:
    from flawscope.data.webs import good_frames
    from flawscope.decide.workflow import calibrate_bundle
    from flawscope.export import export_bundle
    from flawscope.models import get_model_class, save_model

    began = time.perf_counter()
    train = good_frames(spec, args.frame, args.train_frames, rolls=3)
    calib_spec = type(spec)(**{**spec.__dict__, "seed": spec.seed + 500})
    calib = good_frames(calib_spec, args.frame, args.calib_frames, rolls=2)
    generated = time.perf_counter() - began
    model = get_model_class("padim")(backbone="efficientnet_lite0", image_size=args.frame).fit(train)
    fitted = time.perf_counter() - began - generated
    save_model(model, out / "bundle")
    calibration = calibrate_bundle(out / "bundle", calib, target_frr=args.target_frr)
    export_bundle(out / "bundle", out / "deploy")
    return {
        "train_frames": len(train),
        "calibration_frames": len(calib),
        "target_frr": args.target_frr,
        "reject_threshold": calibration.thresholds.reject,
        "calibration_frr": calibration.empirical_frr,
        "calibration_frr_upper_bound": calibration.frr_upper_bound,
        "generate_seconds": round(generated, 1),
        "fit_seconds": round(fitted, 1),
        "total_seconds": round(time.perf_counter() - began, 1),
    }


def match(defects: Sequence[Any], truth: Sequence[Any], spec: Any, radius_mm: float) -> dict[str, Any]:
    """Match reports to true defects by distance (mm) between the report and the true centre."""
    centres = [
        (t.centre_px()[1] * spec.mm_per_row, t.centre_px()[0] * spec.mm_per_px) for t in truth
    ]  # (along mm, across mm)
    reports = [(d.along_m * 1000.0, d.across_mm) for d in defects]
    per_truth: list[list[int]] = [[] for _ in truth]
    matched_report = [False] * len(reports)
    for j, (ra, rc) in enumerate(reports):
        best, best_d = None, math.inf
        for i, (ta, tc) in enumerate(centres):
            if abs(ra - ta) > radius_mm:
                continue
            dist = math.hypot(ra - ta, rc - tc)
            if dist <= radius_mm and dist < best_d:
                best, best_d = i, dist
        if best is not None:
            per_truth[best].append(j)
            matched_report[j] = True
    errors, along_err, across_err, worst = [], [], [], []
    for i, reps in enumerate(per_truth):
        if len(reps) == 1:
            ra, rc = reports[reps[0]]
            ta, tc = centres[i]
            errors.append(math.hypot(ra - ta, rc - tc))
            along_err.append(abs(ra - ta))
            across_err.append(abs(rc - tc))
            d, t = defects[reps[0]], truth[i]
            worst.append(
                {
                    "error_mm": round(errors[-1], 2),
                    "along_mm": round(ra - ta, 2),
                    "across_mm": round(rc - tc, 2),
                    "kind": t.kind,
                    "true_bbox": list(t.bbox),
                    "reported_box": [d.col0, d.row0, d.col1, d.row1],
                    "frames": list(d.frames),
                }
            )
    worst.sort(key=lambda w: -w["error_mm"])
    return {
        "true_defects": len(truth),
        "reported": len(reports),
        "detected_once": sum(len(r) == 1 for r in per_truth),
        "missed": sum(len(r) == 0 for r in per_truth),
        "reported_more_than_once": sum(len(r) > 1 for r in per_truth),
        "false_reports": matched_report.count(False),
        "position_error_mm": {
            "mean": float(np.mean(errors)) if errors else None,
            "p95": float(np.percentile(errors, 95)) if errors else None,
            "max": float(np.max(errors)) if errors else None,
            "along_max": float(np.max(along_err)) if along_err else None,
            "across_max": float(np.max(across_err)) if across_err else None,
            "within_5mm": sum(e <= 5.0 for e in errors),
        },
        "missed_defects": [
            {"number": t.number, "kind": t.kind, "bbox": list(t.bbox), "delta": round(t.delta, 1)}
            for t, r in zip(truth, per_truth, strict=True)
            if not r
        ],
        "largest_errors": worst[:8],
        "false_positions": [
            {"along_m": round(reports[j][0] / 1000, 4), "across_mm": round(reports[j][1], 1)}
            for j, ok in enumerate(matched_report)
            if not ok
        ][:50],
    }


def boundary_crossers(truth: Sequence[Any], frame: int, overlap: int) -> dict[str, int]:
    """How many true defects cross a frame's first or last row (seen in pieces by two frames)."""
    step = frame - overlap
    crossing = 0
    for t in truth:
        _, y0, _, y1 = t.bbox
        edges: set[int] = set()
        for k in range(max(0, (y0 - frame) // step), y1 // step + 2):
            edges |= {k * step, k * step + frame}
        crossing += any(y0 < e < y1 for e in edges)
    return {"crossing_a_frame_edge": crossing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--metres", type=float, default=500.0)
    parser.add_argument("--width", type=int, default=256, help="pixels across the web")
    parser.add_argument("--mm-per-px", type=float, default=1.0)
    parser.add_argument("--mm-per-row", type=float, default=1.0)
    parser.add_argument("--frame", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--defects", type=int, default=60)
    parser.add_argument("--defect-mm", default="6,15")
    parser.add_argument("--texture", default="steel")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--train-frames", type=int, default=300)
    parser.add_argument("--calib-frames", type=int, default=400)
    parser.add_argument("--target-frr", type=float, default=0.0025)
    parser.add_argument("--match-mm", type=float, default=20.0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    parser.add_argument("--bundle", type=Path, default=None, help="reuse an exported bundle (skips training)")
    parser.add_argument("--save-bundle", type=Path, default=None, help="keep the exported bundle here")
    parser.add_argument("--output", default="linescan.json")
    args = parser.parse_args()

    from flawscope.acquire.websim import WebSimSource
    from flawscope.audit import AuditLog
    from flawscope.data.webs import WebSpec, plan_defects
    from flawscope.runtime import Inspector
    from flawscope.webscan import WebScan

    lo, hi = (float(v) for v in args.defect_mm.split(","))
    base = WebSpec(
        length_m=1.0,
        width_px=args.width,
        mm_per_px=args.mm_per_px,
        mm_per_row=args.mm_per_row,
        texture=args.texture,
        defect_mm=(lo, hi),
        seed=0,
    )
    web = WebSpec(**{**base.__dict__, "length_m": args.metres, "n_defects": args.defects, "seed": args.seed})
    load = os.getloadavg()
    started = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        training: dict[str, Any] = {}
        deploy = args.bundle
        if deploy is None:
            training = train_bundle(args, base, out)
            deploy = out / "deploy"
            if args.save_bundle is not None:
                import shutil

                shutil.copytree(deploy, args.save_bundle, dirs_exist_ok=True)
        inspector = TimedInspector(Inspector.load(deploy, threads=args.threads))
        source = WebSimSource(web, frame_rows=args.frame, overlap_rows=args.overlap, roll="BENCH")
        with AuditLog.open(f"sqlite:///{out / 'audit.db'}") as log:
            began = time.perf_counter()
            result = WebScan(source, inspector, audit=log, batch=args.batch).run()
            scan_seconds = time.perf_counter() - began
            records = log.count()
    truth = plan_defects(web)
    matched = match(result.defects, truth, web, args.match_mm)
    step_m = (args.frame - args.overlap) * args.mm_per_row / 1000.0
    runtime_fps = inspector.frames / inspector.seconds if inspector.seconds else math.nan
    s = result.summary
    report = {
        "command": "python benchmarks/linescan.py " + " ".join(sys.argv[1:]),
        "date": started.isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "load_average_at_start": [round(v, 2) for v in load],
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "web": {
            "length_m": args.metres,
            "width_mm": args.width * args.mm_per_px,
            "width_px": args.width,
            "mm_per_px": args.mm_per_px,
            "mm_per_row": args.mm_per_row,
            "texture": args.texture,
            "defects": args.defects,
            "defect_mm": [lo, hi],
            "frame_rows": args.frame,
            "overlap_rows": args.overlap,
        },
        "training": training,
        "matching": matched,
        "boundaries": boundary_crossers(truth, args.frame, args.overlap),
        "summary": {k: v for k, v in s.__dict__.items()},
        "audit_records": records,
        "scan_seconds": round(scan_seconds, 1),
        "line_rate_m_min_whole_scan": s.inspected_m / scan_seconds * 60.0,
        "runtime_frames_per_s": runtime_fps,
        "runtime_seconds": round(inspector.seconds, 1),
        "line_rate_m_min_runtime": runtime_fps * step_m * 60.0,
        "rows_per_s_runtime": runtime_fps * (args.frame - args.overlap),
    }
    target = HERE / "results" / args.output
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(report, indent=1, default=float) + "\n")
    p = matched["position_error_mm"]
    rows = [
        ("web", f"{args.metres:g} m x {args.width * args.mm_per_px:g} mm, {args.mm_per_px:g} mm/px across, "
                f"{args.mm_per_row:g} mm/row, frames {args.frame} rows / overlap {args.overlap}"),
        ("true defects", f"{matched['true_defects']} ({lo:g}-{hi:g} mm); crossing a frame edge: "
                         f"{report['boundaries']['crossing_a_frame_edge']}"),
        ("detected once", str(matched["detected_once"])),
        ("missed", str(matched["missed"])),
        ("reported more than once (split/doubled)", str(matched["reported_more_than_once"])),
        ("false reports", str(matched["false_reports"])),
        ("position error mm (mean / p95 / max)", f"{p['mean']} / {p['p95']} / {p['max']}"),
        ("within 5 mm", f"{p['within_5mm']} of {matched['detected_once']}"),
        ("frames", f"{s.frames}; not inspected {s.not_inspected_m:.3f} m; yield {100 * s.yield_:.1f}%"),
        ("whole scan", f"{scan_seconds:.1f} s = {report['line_rate_m_min_whole_scan']:.1f} m/min"),
        ("runtime alone", f"{runtime_fps:.2f} frames/s = {report['line_rate_m_min_runtime']:.1f} m/min "
                          f"({report['rows_per_s_runtime']:.0f} rows/s)"),
        ("load average start / end", f"{report['load_average_at_start']} / {report['load_average_at_end']}"),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()

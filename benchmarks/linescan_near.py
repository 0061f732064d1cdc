"""Line-scan position errors, fast: only the frames that touch a true defect are inspected.

The web of ``benchmarks/linescan.py`` (same :class:`~flawscope.data.webs.WebSpec` and seed), cut
into the same frames (``--frame`` rows every ``--frame - --overlap``), judged by a saved bundle
(``benchmarks/linescan.py --save-bundle DIR``), each frame's regions found and merged exactly as
:class:`flawscope.webscan.WebScan` does (``defect_regions`` + ``DefectMerger``, in web order), but
only for the frames that touch a true defect (+-1 frame): about 1/25 of the frames of a 500 m
web, and the same positions (the merging only ever joins frames that touch). With
``--no-offset`` the map offset is not corrected (the scan before the correction). Prints the
position errors and writes benchmarks/results/OUTPUT.

    python benchmarks/linescan_near.py BUNDLE [--metres 500] [--width 512] [--defects 60]
        [--seed 7] [--no-offset] [--output linescan_near.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--metres", type=float, default=500.0)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--defects", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--frame", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--no-offset", action="store_true", help="do not correct the map offset")
    parser.add_argument("--output", default="linescan_near.json")
    args = parser.parse_args()

    from flawscope.acquire.rows import WebGeometry
    from flawscope.data.webs import WebGenerator, WebSpec, plan_defects
    from flawscope.runtime import Inspector
    from flawscope.webscan.merge import DefectMerger
    from flawscope.webscan.regions import defect_regions
    from flawscope.webscan.register import measure_offset

    rows, step = args.frame, args.frame - args.overlap
    spec = WebSpec(length_m=args.metres, width_px=args.width, n_defects=args.defects, seed=args.seed)
    truth = plan_defects(spec)
    wanted = set()
    for t in truth:
        _, y0, _, y1 = t.bbox
        for k in range(max(0, (y0 - rows) // step), y1 // step + 2):
            s = k * step
            if s < y1 + 40 and s + rows > y0 - 40 and s + rows <= spec.n_rows:
                wanted.add(s)
    need, frames, kept, kept0 = sorted(wanted), {}, [], 0
    for first, block in WebGenerator(spec).blocks():
        kept.append(block)
        end = first + block.shape[0]
        joined = np.concatenate(kept)
        while need and need[0] + rows <= end:
            s = need.pop(0)
            frames[s] = joined[s - kept0 : s - kept0 + rows].copy()
        keep = max(kept0, end - 2 * rows)
        kept, kept0 = [joined[keep - kept0 :]], keep
        if not need:
            break
    inspector = Inspector.load(args.bundle, threads=2)
    offset, registration = (0.0, 0.0), None
    if not args.no_offset:  # as WebScan does: on the web's first frame
        first_frame = np.concatenate([b for _, b in WebGenerator(spec).blocks(stop_row=rows)])
        registration = measure_offset(first_frame, lambda ims: tuple(inspector.score_many(ims).maps))
        offset = (registration.dx, registration.dy) if registration else offset
    order = sorted(frames)
    merger = DefectMerger(WebGeometry(spec.mm_per_row, spec.mm_per_px, spec.width_px), "NEAR")
    defects = []
    for i in range(0, len(order), 8):
        chunk = order[i : i + 8]
        for s, verdict in zip(chunk, inspector.inspect_many([frames[s] for s in chunk]), strict=True):
            defects.extend(merger.add(s, defect_regions(verdict, frames[s].shape, offset)))
    defects.extend(merger.finish())
    results = []
    for t in truth:
        cx, cy = t.centre_px()
        ta, tc = cy * spec.mm_per_row, cx * spec.mm_per_px
        near = [d for d in defects if math.hypot(d.along_m * 1000 - ta, d.across_mm - tc) <= 20]
        row = {"number": t.number, "kind": t.kind, "reports": len(near), "true_bbox": list(t.bbox)}
        if len(near) == 1:
            d = near[0]
            row.update(
                error_mm=math.hypot(d.along_m * 1000 - ta, d.across_mm - tc),
                along_mm=d.along_m * 1000 - ta,
                across_mm=d.across_mm - tc,
                frames=list(d.frames),
            )
        results.append(row)
    errors = [r["error_mm"] for r in results if "error_mm" in r]
    matched = sum(
        any(
            math.hypot(d.along_m * 1000 - t.centre_px()[1], d.across_mm - t.centre_px()[0]) <= 20
            for t in truth
        )
        for d in defects
    )
    report = {
        "command": "python benchmarks/linescan_near.py " + " ".join(os.sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "frames_inspected": len(order),
        "map_offset_px": registration.__dict__ if registration else None,
        "reported": len(defects),
        "false_reports": len(defects) - matched,
        "detected_once": sum(r["reports"] == 1 for r in results),
        "error_mm": {
            "mean": float(np.mean(errors)),
            "max": float(np.max(errors)),
            "within_5mm": sum(e <= 5.0 for e in errors),
            "mean_signed_along": float(np.mean([r["along_mm"] for r in results if "along_mm" in r])),
            "mean_signed_across": float(np.mean([r["across_mm"] for r in results if "across_mm" in r])),
        },
        "defects": sorted(results, key=lambda r: -r.get("error_mm", 1e9)),
    }
    (HERE / "results" / args.output).write_text(json.dumps(report, indent=1) + "\n")
    e = report["error_mm"]
    print(
        f"{len(order)} frames; offset {report['map_offset_px']}; reported {len(defects)}, false "
        f"{report['false_reports']}, detected once {report['detected_once']} of {len(truth)}; error mm mean "
        f"{e['mean']:.2f} max {e['max']:.2f}, within 5 mm {e['within_5mm']}; signed mean along "
        f"{e['mean_signed_along']:.2f} across {e['mean_signed_across']:.2f}"
    )


if __name__ == "__main__":
    main()

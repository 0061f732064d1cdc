"""A roll's report: the JSON of the scan, and a defect map (PNG) a person can read at a glance.

The map draws the web as a long band, metres along the web on the horizontal axis and
millimetres across on the vertical one: each defect a mark at its place, sized by its extent,
and each not-inspected stretch shaded red across the whole width (nothing there was passed); the
web's edges left out of inspection (a margin, the background beyond found edges) are shaded red
along their length.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from flawscope.jsonsafe import finite_or_none
from flawscope.webscan.scan import ScanResult


def result_to_dict(result: ScanResult) -> dict[str, Any]:
    """The scan as plain JSON-ready data: summary, geometry, defects, not-inspected stretches."""
    summary = dataclasses.asdict(result.summary)
    summary["yield"] = summary.pop("yield_")
    doc = {
        "summary": summary,
        "geometry": dataclasses.asdict(result.geometry),
        "defects": [dataclasses.asdict(d) for d in result.defects],
        "not_inspected": [{**dataclasses.asdict(s), "length_m": s.length_m} for s in result.stretches],
        "map_offset_px": dataclasses.asdict(result.registration) if result.registration else None,
        "inspected_bands": [
            {"start_m": a, "end_m": b, "from_mm": lo, "to_mm": hi} for a, b, lo, hi in result.bands
        ],
    }
    cleaned: dict[str, Any] = finite_or_none(doc)
    return cleaned


def write_json(result: ScanResult, path: str | os.PathLike[str]) -> Path:
    """Write :func:`result_to_dict` as strict JSON (no NaN)."""
    target = Path(path)
    target.write_text(json.dumps(result_to_dict(result), indent=1, allow_nan=False) + "\n")
    return target


def write_defect_map(result: ScanResult, path: str | os.PathLike[str]) -> Path:
    """Draw the roll's defect map as a PNG (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    s = result.summary
    width_mm = max(s.width_mm, 1.0)
    start = min([x.start_m for x in result.stretches] + [d.along_m for d in result.defects] + [0.0])
    end = max(start + s.length_m, start + 1e-3)
    fig, ax = plt.subplots(figsize=(12, 3.2), dpi=100)
    ax.add_patch(Rectangle((start, 0), end - start, width_mm, color="#dfe6ee", zorder=0))
    for stretch in result.stretches:
        ax.add_patch(
            Rectangle(
                (stretch.start_m, 0),
                max(stretch.length_m, (end - start) / 2000),
                width_mm,
                color="#d62728",
                alpha=0.55,
                zorder=1,
            )
        )
    if result.bands:  # the edges outside each frame's inspected band: not inspected
        starts = [b[0] for b in result.bands] + [result.bands[-1][1]]
        lows = [b[2] for b in result.bands] + [result.bands[-1][2]]
        highs = [b[3] for b in result.bands] + [result.bands[-1][3]]
        ax.fill_between(starts, 0, lows, step="post", color="#d62728", alpha=0.35, zorder=1, linewidth=0)
        ax.fill_between(
            starts, highs, width_mm, step="post", color="#d62728", alpha=0.35, zorder=1, linewidth=0
        )
    if result.defects:
        xs = [d.along_m for d in result.defects]
        ys = [d.across_mm for d in result.defects]
        sizes = [min(400.0, 12.0 + 2.0 * max(d.length_mm, d.width_mm)) for d in result.defects]
        ax.scatter(xs, ys, s=sizes, marker="x", color="#111111", linewidths=1.2, zorder=2)
    ax.set_xlim(start, end)
    margin = 0.03 * width_mm
    ax.set_ylim(width_mm + margin, -margin)  # the first pixel at the top, as the camera sees it
    ax.set_xlabel("along the web (m from the roll start)")
    ax.set_ylabel("across (mm)")
    ax.set_title(
        f"roll {s.roll}: {s.defects} defects in {s.length_m:.1f} m, {s.not_inspected_m:.2f} m not inspected "
        + (f"and {s.edge_not_inspected_mm:.1f} mm of edges " if s.edge_not_inspected_mm > 0 else "")
        + f"(red), yield {100 * s.yield_:.1f}% of {s.segment_m:g} m segments clean"
    )
    fig.tight_layout()
    target = Path(path)
    fig.savefig(target)
    plt.close(fig)
    return target

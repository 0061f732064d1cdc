"""``flawscope web-scan``: continuous webs seen by a line-scan camera (simulate, cut frames, run)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from flawscope.cli.audit import DEFAULT_AUDIT
from flawscope.cli.common import check_writable, console, err_console
from flawscope.errors import FlawscopeError, InputError

webscan_app = typer.Typer(
    help="Line-scan webs (steel, textile, paper, film): frames of a continuous web, defects in web "
    "coordinates, a roll's defect map and length-based yield.",
    no_args_is_help=True,
)


@webscan_app.command("simulate")
def simulate_command(
    output: Annotated[Path, typer.Argument(help="Strip file to write: .tif (uncompressed) or .npy.")],
    length: Annotated[float, typer.Option(metavar="M", help="Web length in metres.")] = 20.0,
    width: Annotated[int, typer.Option(metavar="PX", help="Pixels across the web.")] = 512,
    mm_per_px: Annotated[float, typer.Option(help="Across-web pixel size, mm.")] = 1.0,
    mm_per_row: Annotated[float, typer.Option(help="Along-web row size (encoder step), mm.")] = 1.0,
    texture: Annotated[str, typer.Option(help="steel or textile.")] = "steel",
    defects: Annotated[int, typer.Option(help="Defects placed along the web (0: a good web).")] = 0,
    defect_mm: Annotated[str, typer.Option(metavar="LO,HI", help="Defect sizes, mm.")] = "6,15",
    seed: Annotated[int, typer.Option(help="Seed of the web.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing file.")] = False,
) -> None:
    """Write a simulated web as a strip image (streamed, in constant memory), with its defects' truth."""
    import numpy as np

    from flawscope.data.webs import WebGenerator, WebSpec

    if output.suffix.lower() not in (".tif", ".tiff", ".npy"):
        raise InputError(output, "the strip must be a .tif or .npy file (both stream when read)")
    if output.exists() and not overwrite:
        raise InputError(output, "exists; give --overwrite to replace it")
    try:
        lo, hi = (float(v) for v in defect_mm.split(","))
    except ValueError:
        raise InputError("--defect-mm", f"expected LO,HI in mm, got {defect_mm!r}") from None
    spec = WebSpec(length, width, mm_per_px, mm_per_row, texture, defects, (lo, hi), seed=seed)
    check_writable(output, "strip")
    shape = (spec.n_rows, spec.width_px)
    if output.suffix.lower() == ".npy":
        strip = np.lib.format.open_memmap(output, mode="w+", dtype=np.uint8, shape=shape)
    else:
        import tifffile

        strip = tifffile.memmap(output, shape=shape, dtype=np.uint8)
    generator = WebGenerator(spec)
    for first, rows in generator.blocks():
        strip[first : first + rows.shape[0]] = rows
    strip.flush()
    del strip
    truth = output.with_suffix(".truth.json")
    doc = {
        "spec": {**spec.__dict__, "defect_mm": list(spec.defect_mm), "contrast": list(spec.contrast)},
        "defects": [
            {
                "number": d.number,
                "kind": d.kind,
                "bbox": list(d.bbox),
                "along_m": (d.centre_px()[1]) * mm_per_row / 1000.0,
                "across_mm": d.centre_px()[0] * mm_per_px,
            }
            for d in generator.defects
        ],
    }
    truth.write_text(json.dumps(doc, indent=1) + "\n")
    console.print(
        f"wrote {escape(str(output))}: {spec.length_m:g} m x {spec.width_px * mm_per_px:g} mm "
        f"({shape[0]} rows x {shape[1]} px), {len(generator.defects)} defects ({escape(str(truth))})",
        soft_wrap=True,
        highlight=False,
    )


@webscan_app.command("frames")
def frames_command(
    source: Annotated[
        str, typer.Argument(metavar="URI", help="A line-scan source (webstrip://, websim://...).")
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Dataset folder: frames go to OUTPUT/good/.")
    ],
    count: Annotated[int, typer.Option(help="Most frames to write (0: all).")] = 0,
) -> None:
    """Cut a good web into frames (PNG) for 'flawscope train': the frames the scan will inspect."""
    import cv2

    from flawscope.acquire import open_source
    from flawscope.acquire.rows import RowSource

    target = output / "good"
    with open_source(source) as frames:
        if not isinstance(frames, RowSource):
            raise InputError(source, "not a line-scan source (websim://, webstrip://, gigeline://)")
        target.mkdir(parents=True, exist_ok=True)
        written = 0
        for frame in frames:
            if frame.image is None:
                continue  # a gap: nothing to learn from
            cv2.imwrite(str(target / f"{frame.part_id}.png"), frame.image)
            written += 1
            if count and written >= count:
                break
    if written == 0:
        raise FlawscopeError(f"{source}: no frame could be cut (the web is shorter than one frame?)")
    console.print(f"wrote {written} frames to {escape(str(target))}", soft_wrap=True, highlight=False)


def _summary_table(result: Any) -> Table:
    s = result.summary
    table = Table(title=f"roll {escape(s.roll)}", show_header=False)
    rows = [
        ("web length", f"{s.length_m:.2f} m x {s.width_mm:g} mm"),
        ("inspected", f"{s.inspected_m:.2f} m in {s.frames} frames"),
        ("not inspected", f"{s.not_inspected_m:.3f} m ({s.gaps} gaps, {s.rows_missing} rows missing)"),
        (
            "inspected width",
            f"{s.inspected_width_mm:.1f} of {s.width_mm:g} mm "
            f"(edges not inspected: {s.edge_not_inspected_mm:.1f} mm)",
        ),
        ("rows out of order", f"{s.rows_late} late, {s.rows_duplicate} duplicated (dropped)"),
        ("defects", f"{s.defects} ({s.defects_per_100m:.2f} per 100 m)"),
        ("length yield", f"{100 * s.yield_:.1f}% ({s.clean_m:.1f} m clean in {s.segment_m:g} m segments)"),
        ("line rate sustained", f"{s.line_rate_m_min:.1f} m/min ({s.seconds:.1f} s)"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


@webscan_app.command("run")
def run_command(
    bundle: Annotated[Path, typer.Argument(help="Deployable bundle trained on good web frames.")],
    source: Annotated[
        str, typer.Option(metavar="URI", help="Line-scan source: websim://, webstrip://, gigeline://.")
    ],
    audit: Annotated[
        str, typer.Option(metavar="URL", help="Audit database: sqlite:///FILE or postgresql://user@host/db.")
    ] = DEFAULT_AUDIT,
    station: Annotated[str, typer.Option(help="Station name written into every record.")] = "web-1",
    json_out: Annotated[
        Path | None, typer.Option("--json", metavar="FILE", help="Write the scan as JSON.")
    ] = None,
    defect_map: Annotated[
        Path | None, typer.Option("--map", metavar="FILE.png", help="Draw the roll's defect map.")
    ] = None,
    segment_m: Annotated[float, typer.Option(help="Segment length of the length-based yield, m.")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Frames inspected together.")] = 8,
    margin_mm: Annotated[
        float,
        typer.Option(
            metavar="MM",
            help="Leave this much inside each web edge out of inspection (recorded as not inspected).",
        ),
    ] = 0.0,
    find_edges: Annotated[
        bool,
        typer.Option(
            "--find-edges/--full-width",
            help="Find the web's edges in every frame (a web narrower than the camera's view).",
        ),
    ] = False,
    edge_contrast: Annotated[
        float, typer.Option(metavar="GREY", help="Grey levels between web and background at an edge.")
    ] = 25.0,
    background: Annotated[
        float | None,
        typer.Option(
            metavar="GREY",
            help="The background's grey level beyond the web (with --find-edges): a frame without web "
            "is then recorded as not inspected.",
        ),
    ] = None,
    show: Annotated[bool, typer.Option("--show/--quiet", help="List each defect as it is found.")] = True,
    trusted_keys: Annotated[
        Path | None,
        typer.Option(metavar="PATH", help="Trust store (a public key file or a folder of *.pub)."),
    ] = None,
    allow_unsigned: Annotated[
        bool, typer.Option("--allow-unsigned", help="Development only: load an unsigned bundle.")
    ] = False,
) -> None:
    """Inspect a roll: frames judged, defects merged across frames, reported in web coordinates.

    Every frame, every not-inspected stretch (rows lost) and every defect is an audit record with
    its place on the web; the summary gives the defects per 100 m and the length-based yield.
    """
    from flawscope.acquire import open_source
    from flawscope.acquire.rows import RowSource
    from flawscope.audit import AuditLog
    from flawscope.audit.schema import parse_url
    from flawscope.runtime import Inspector
    from flawscope.webscan import WebScan
    from flawscope.webscan.report import write_defect_map, write_json

    if not segment_m > 0:
        raise InputError("--segment-m", f"must be > 0 m, got {segment_m}")
    if batch_size < 1:
        raise InputError("--batch-size", f"must be >= 1, got {batch_size}")
    from flawscope.webscan.edges import EdgeConfig

    try:
        edges = EdgeConfig(margin_mm, find_edges, edge_contrast, background)
    except InputError as exc:
        raise InputError("--margin-mm/--edge-contrast", exc.problem) from None
    for path in (json_out, defect_map):
        if path is not None:
            check_writable(path)
    parse_url(audit)
    inspector = Inspector.load(bundle, trusted_keys=trusted_keys, allow_unsigned=allow_unsigned)
    if inspector.thresholds is None:
        raise FlawscopeError(f"{bundle}: no calibrated thresholds; run 'flawscope calibrate' before export")

    def listed(defect: Any) -> None:
        if show:
            console.print(
                f"defect {defect.number}: {defect.along_m:.4f} m along, {defect.across_mm:.1f} mm across, "
                f"{defect.length_mm:.0f} x {defect.width_mm:.0f} mm, peak {defect.peak:.3g}",
                highlight=False,
            )

    with contextlib.ExitStack() as stack:
        rows = stack.enter_context(open_source(source))
        if not isinstance(rows, RowSource):
            raise InputError(source, "not a line-scan source (websim://, webstrip://, gigeline://)")
        log = stack.enter_context(AuditLog.open(audit))
        console.print(
            f"scanning {escape(rows.uri)}; records: {escape(log.url)}", soft_wrap=True, highlight=False
        )
        scan = WebScan(
            rows,
            inspector,
            audit=log,
            station=station,
            batch=batch_size,
            segment_m=segment_m,
            on_defect=listed,
            edges=edges,
        )
        result = scan.run()
        head = log.head()
    console.print(_summary_table(result))
    if json_out is not None:
        write_json(result, json_out)
        console.print(f"scan: {escape(str(json_out))}", soft_wrap=True, highlight=False)
    if defect_map is not None:
        write_defect_map(result, defect_map)
        console.print(f"defect map: {escape(str(defect_map))}", soft_wrap=True, highlight=False)
    console.print(f"audit head {head.seq}:{head.record_hash}", soft_wrap=True, highlight=False)
    if result.summary.frames == 0:
        err_console.print("[red]no frame was inspected[/red]")
        raise FlawscopeError(
            f"{source}: no frame was inspected (the web is shorter than one frame, or no rows came)"
        )

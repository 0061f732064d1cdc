"""``flawscope inspect``: run the line."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.markup import escape

from flawscope.cli.audit import DEFAULT_AUDIT
from flawscope.cli.common import console, err_console
from flawscope.cli.render import line_summary_table, part_header, part_line
from flawscope.errors import FlawscopeError

# The sources and their options, as `flawscope inspect --help` shows them. A test checks that
# every scheme and query option of flawscope.acquire.uri is listed here (and in the README).
SOURCES_HELP = """\
Sources (--source); options go in the query string, e.g.
sim:///data/parts?rate=5&count=100

  DIR, folder:///DIR  every image of DIR and its subfolders, once, sorted
                      recursive=1|0
  watch:///DIR        new image files of DIR, each once completely written
                      settle=S poll=S timeout=S existing=1|0 idle=S count=N
  video:///FILE       the frames of a video file
                      every=N count=N prefix=TEXT
  rtsp://HOST/PATH    an RTSP stream (rtsps:// over TLS), reconnecting when
                      it drops
  usb://N             USB camera N, reconnecting when it drops
                      fps=X every=N count=N backoff=S max_backoff=S
                      retries=N prefix=TEXT
  gige://DEVICE       GigE Vision camera (pip install flawscope[gige])
                      count=N frame_rate=X exposure_us=X pixel_format=TEXT
                      timeout=S buffers=N backoff=S max_backoff=S retries=N
  sim:///DATASET      line simulator: parts drawn from a dataset at a rate
                      rate=X defect_ratio=X count=N seed=N start=N
                      prefix=TEXT cache=N drift=KIND:AMOUNT[:RAMP[:START]]
                      (dim, blur or texture); part ids are unique per run
                      unless prefix is given
Line-scan webs (frames of a continuous web; 'flawscope web-scan run' merges
defects across frames and reports them in web coordinates). Each also takes
frame=ROWS overlap=ROWS mm_per_row=X mm_per_px=X roll=NAME
  websim://           simulated web with known defects, encoder-paced
                      length=M width=PX texture=steel|textile defects=N
                      seed=N speed=M_PER_MIN drop=ROW:COUNT,... block=ROWS
  webstrip:///FILE    a long strip image in row blocks (.npy and uncompressed
                      TIFF streamed) block=ROWS max_mb=X
  webvideo:///FILE    a video of a web, each video frame a block of rows
                      rows=N (rows from the top of each video frame)
  gigeline://DEVICE   GigE Vision line-scan camera through Aravis
                      lines=N width=PX line_rate=X exposure_us=X
                      pixel_format=TEXT rows=N timeout=S buffers=N"""

Show = Literal["all", "rejects", "none"]


def inspect_command(
    bundle: Annotated[Path, typer.Argument(help="Deployable bundle folder (from 'flawscope export').")],
    source: Annotated[
        str,
        typer.Option(metavar="URI", help="Where parts come from: a folder or a URI (listed below)."),
    ],
    audit: Annotated[
        str, typer.Option(metavar="URL", help="Audit database: sqlite:///FILE or postgresql://user@host/db.")
    ] = DEFAULT_AUDIT,
    store_images: Annotated[
        Path | None, typer.Option(metavar="DIR", help="Keep every part's image in this folder.")
    ] = None,
    station: Annotated[str, typer.Option(help="Station name written into every record.")] = "station-1",
    batch_size: Annotated[int, typer.Option(help="Most parts inspected together.")] = 8,
    queue_size: Annotated[int, typer.Option(help="Parts waiting before backpressure applies.")] = 64,
    backpressure: Annotated[
        Literal["block", "drop"],
        typer.Option(
            help="When parts come faster than they are inspected: 'block' the source, or "
            "'drop' the part (recorded not_inspected)."
        ),
    ] = "block",
    show: Annotated[
        Show,
        typer.Option(help="Parts to list as they are recorded: all, rejects (all but pass) or none."),
    ] = "all",
    int8: Annotated[bool, typer.Option("--int8", help="Use the INT8 graph.")] = False,
    review_sample: Annotated[
        float,
        typer.Option(
            metavar="FRACTION",
            help="Fraction of passed parts sampled for people to review (keeps their maps).",
        ),
    ] = 0.0,
    trusted_keys: Annotated[
        Path | None,
        typer.Option(
            metavar="PATH",
            help="Trust store: a public key file or a folder of *.pub; only bundles signed by these keys "
            "load (default: keys made on this machine or trusted with 'flawscope keys trust').",
        ),
    ] = None,
    allow_unsigned: Annotated[
        bool,
        typer.Option(
            "--allow-unsigned",
            help="Development only: load a bundle without a trusted signature (noted in records).",
        ),
    ] = False,
    shadow: Annotated[
        Path | None,
        typer.Option(
            help="A candidate's deployable bundle to run in shadow: it judges every part too, its verdicts "
            "go to the results table (never to the line)."
        ),
    ] = None,
    monitor: Annotated[
        bool,
        typer.Option(help="Watch for drift against the calibration reference (when the bundle has one)."),
    ] = True,
) -> None:
    """Run the line: acquire, inspect, decide, record (hash-chained audit), publish. Ctrl-C stops cleanly.

    Each part is listed as it is recorded; the summary says where the records and images went.
    """
    import signal
    import threading

    from rich.live import Live

    from flawscope.acquire import open_source
    from flawscope.audit import AuditLog
    from flawscope.audit.schema import parse_url
    from flawscope.line import ImageStore, check_line_settings, run_line
    from flawscope.runtime import Inspector

    # Everything is checked before anything is created: a refused run leaves no database or folder.
    check_line_settings(
        station=station,
        batch_size=batch_size,
        queue_size=queue_size,
        backpressure=backpressure,
        review_sample=review_sample,
    )
    parse_url(audit)
    inspector = Inspector.load(bundle, int8=int8, trusted_keys=trusted_keys, allow_unsigned=allow_unsigned)
    if allow_unsigned:
        err_console.print("[yellow]--allow-unsigned: every record of this run says so[/yellow]")
    if inspector.thresholds is None:
        raise FlawscopeError(f"{bundle}: no calibrated thresholds; run 'flawscope calibrate' before export")
    drift = _drift_monitor(inspector) if monitor else None
    observer = drift
    if shadow is not None:
        from flawscope.improve.shadow import ShadowObserver
        from flawscope.reinspect.store import ResultStore

        candidate = Inspector.load(shadow, trusted_keys=trusted_keys, allow_unsigned=allow_unsigned)
        observer = ShadowObserver(inspector, candidate, ResultStore.open(audit), station, then=drift)
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        err_console.print(f"[yellow]{signal.Signals(signum).name}: finishing the parts in flight...[/yellow]")
        stop.set()

    def status_text(summary: Any) -> str:
        counts = " ".join(f"{k}={v}" for k, v in summary.counts.items() if v)
        return (
            f"{summary.station}: {summary.recorded} recorded, {summary.recent_throughput:.1f} parts/s, "
            f"{counts or 'no parts yet'}"
        )

    with contextlib.ExitStack() as stack:
        frames = stack.enter_context(open_source(source))
        existed = store_images is not None and store_images.exists()
        store = ImageStore(store_images) if store_images is not None else None
        try:
            log = stack.enter_context(AuditLog.open(audit))
        except FlawscopeError:
            if store is not None and not existed:
                # Refused after the image folder was made: do not leave an empty folder behind.
                with contextlib.suppress(OSError):
                    store.root.rmdir()
            raise
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, request_stop)
        count = len(frames) if hasattr(frames, "__len__") else None
        console.print(
            f"inspecting {escape(frames.uri)}" + (f" ({count} parts)" if count is not None else ""),
            soft_wrap=True,
            highlight=False,
        )
        console.print(f"records: {escape(_where(log.url))}", soft_wrap=True, highlight=False)
        if store is not None:
            console.print(f"images: {escape(str(store.root))}", soft_wrap=True, highlight=False)
        live = stack.enter_context(Live(console=err_console, transient=True))
        publishers = [] if show == "none" else [_lister(show)]
        summary = run_line(
            frames,
            inspector,
            log,
            station=station,
            store_images=store,
            batch_size=batch_size,
            queue_size=queue_size,
            backpressure=backpressure,
            review_sample=review_sample,
            publishers=publishers,
            stop_event=stop,
            on_status=lambda s: live.update(status_text(s)),
            monitor=observer,
        )
        head = log.head()
        url = log.url
    console.print(line_summary_table(summary, _where(url), store.root if store else None, _drift_line(drift)))
    describe = getattr(observer, "describe", None) if shadow is not None else None
    if describe is not None:
        console.print(f"shadow {escape(str(shadow))}: {escape(describe())}", soft_wrap=True)
    console.print(
        f"audit head {head.seq}:{head.record_hash} (publish it; 'flawscope audit verify "
        "--expected-head SEQ:HASH' then detects records removed from the end)",
        soft_wrap=True,
        highlight=False,
    )
    if summary.unrecorded:
        raise FlawscopeError(f"{summary.unrecorded} parts could not be recorded: treat them as rejects")
    if summary.acquired == 0:
        raise FlawscopeError(f"{source}: no part was inspected (the source gave no image)")


def _drift_line(drift: Any) -> str | None:
    """What the drift monitor saw during the run, for the summary (None without a monitor)."""
    if drift is None:
        return None
    state = drift.summary()
    worst: dict[str, str] = {}
    for event in state.events:
        if event.level == "alarm" or (event.level == "warning" and event.statistic not in worst):
            worst[event.statistic] = event.level
    moved = ", ".join(f"{name} ({level})" for name, level in sorted(worst.items())) or "nothing moved"
    return f"now {state.level}; during the run: {moved}"


def _drift_monitor(inspector: Any) -> Any:
    """The drift monitor of a bundle whose calibration stored a reference (None otherwise, with a note)."""
    from flawscope.monitor import DriftMonitor, reference_of

    reference = reference_of(inspector.bundle.manifest)
    if reference is None or inspector.thresholds is None:
        err_console.print(
            "[yellow]note: no drift monitoring: the bundle was calibrated without a monitoring reference "
            "(calibrate it again with at least 30 good images)[/yellow]"
        )
        return None
    return DriftMonitor(reference, inspector.thresholds.review)


def _lister(show: str) -> Any:
    """A publisher printing one line per recorded part (``show``: all or rejects).

    It prints to standard output; on a terminal Rich's live status line (on standard error)
    stays below the list.
    """
    printed = False

    def publish(record: Any) -> None:
        nonlocal printed
        if show == "rejects" and record.outcome.value == "pass":
            return
        if not printed:
            console.print(part_header(), highlight=False)
            printed = True
        console.print(part_line(record), soft_wrap=True, highlight=False)

    return publish


def _where(url: str) -> str:
    """The audit URL with a SQLite file's absolute path, so a user knows which file it is."""
    if url.startswith("sqlite:///") and "?" not in url:
        path = Path(url.removeprefix("sqlite:///")).absolute()
        return f"sqlite:///{path}"
    return url

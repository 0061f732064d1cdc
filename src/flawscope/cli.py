"""The ``flawscope`` command line: train, evaluate, calibrate, export, inspect, audit, demo."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from flawscope.cli_common import console, err_console, progress_bars, setup_logging
from flawscope.errors import FlawscopeError, InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)


def _parse_params(items: list[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InputError("--param", f"{item!r} is not KEY=VALUE (e.g. --param aggregate=3)")
        key = key.strip()
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def _check_output(path: Path, overwrite: bool) -> None:
    """Refuse to write a bundle over a folder that holds something else, or over a bundle unasked."""
    from flawscope.bundle import MANIFEST

    if path.exists() and not path.is_dir():
        raise InputError(path, "is a file; the bundle is written to a folder")
    if not path.is_dir() or not any(path.iterdir()):
        return
    if not (path / MANIFEST).is_file():
        raise InputError(path, "folder is not empty and is not a bundle; refusing to write into it")
    if not overwrite:
        raise InputError(
            path,
            "already holds a bundle; pass --overwrite to replace it (its thresholds and metrics are lost)",
        )


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    setup_logging(verbose)


@app.command("models")
def models_command() -> None:
    """List the registered anomaly models and the available backbones."""
    from flawscope.features.backbones import BACKBONES
    from flawscope.models import MODELS

    table = Table(title="Anomaly models")
    table.add_column("name")
    table.add_column("description")
    table.add_column("hyperparameters (defaults)")
    for name, cls in sorted(MODELS.items()):
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        table.add_row(name, doc, ", ".join(f"{k}={v}" for k, v in cls.default_params().items()))
    console.print(table)
    backbones = Table(title="Backbones")
    for column in ("name", "weights from", "licence"):
        backbones.add_column(column)
    for spec in BACKBONES.values():
        backbones.add_row(spec.name, spec.package, spec.licence)
    console.print(backbones)


@app.command("train")
def train_command(
    data: Annotated[Path, typer.Argument(help="Dataset folder (MVTec AD layout or good/ [bad/] folders).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Bundle folder to write.")],
    model: Annotated[str, typer.Option(help="Registered model name (see 'flawscope models').")] = "padim",
    backbone: Annotated[str, typer.Option(help="Feature backbone.")] = "efficientnet_lite0",
    image_size: Annotated[int, typer.Option(min=32, help="Canvas size along the short side (px).")] = 256,
    holdout: Annotated[
        float, typer.Option(help="Fraction of good images held out to calibrate thresholds.")
    ] = 0.0,
    target_frr: Annotated[
        float, typer.Option(help="False-reject target when calibrating on the hold-out.")
    ] = 0.01,
    param: Annotated[
        list[str] | None, typer.Option(help="Extra hyperparameter KEY=VALUE (repeatable).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the bundle already in OUTPUT.")] = False,
) -> None:
    """Fit an anomaly model on good parts and save a bundle."""
    from flawscope.data.datasets import load_dataset

    # Cheap checks first (no torch yet): a typo costs a second, not a model import and a fit.
    params = {"backbone": backbone, "image_size": image_size, **_parse_params(param)}
    _check_output(output, overwrite)
    if holdout > 0:
        from flawscope.decide.workflow import check_calibration_options

        check_calibration_options(target_frr)
    dataset = load_dataset(data)

    from flawscope.models.train import train

    with progress_bars() as progress:
        result = train(dataset, output, model=model, holdout=holdout, params=params, progress=progress)
    table = _kv_table(f"Trained {model} ({backbone})")
    pre = result.model.preprocessing_
    assert pre is not None
    table.add_row("training images", str(result.n_train))
    table.add_row("held out for calibration", str(len(result.holdout_images)))
    table.add_row("canvas (h x w)", f"{pre.height} x {pre.width} ({pre.mode})")
    table.add_row("fit time", f"{result.fit_seconds:.1f} s")
    table.add_row("bundle", escape(str(output)))
    table.add_row("model hash", result.bundle.model_hash[:16])
    console.print(table)
    if result.holdout_images:
        from flawscope.decide.workflow import calibrate_bundle

        with progress_bars() as progress:
            report = calibrate_bundle(
                output,
                result.holdout_images,
                target_frr=target_frr,
                names=result.holdout_paths,
                progress=progress,
            )
        _print_calibration(report)
    _print_skipped(result.skipped)


def _print_skipped(skipped: list[tuple[str, str]]) -> None:
    """List the unusable files at the end of a command's output: one line each, file and problem."""
    if skipped:
        err_console.print(f"[yellow]{len(skipped)} file(s) skipped:[/yellow]")
        for path, problem in skipped:
            # File names are text, not Rich markup ("scan [b].png"); a path is never wrapped.
            err_console.print(f"  {escape(path)}: {escape(problem)}", soft_wrap=True, highlight=False)


def _kv_table(title: str) -> Table:
    """An empty two-column (item, value) summary table."""
    table = Table(title=title)
    table.add_column("item")
    table.add_column("value")
    return table


def _print_calibration(result: Any) -> None:
    """What a calibration achieved, with its bounds."""
    t = result.thresholds
    table = _kv_table(f"Calibrated thresholds (version {t.version})")
    table.add_row("reject threshold", f"{t.reject:.4g}")
    table.add_row("review threshold", f"{t.review:.4g}" + ("" if t.has_review_band else " (no review band)"))
    table.add_row("calibration images (good)", str(result.n_good))
    table.add_row("false rejects on them", f"{result.n_false_rejects} ({result.empirical_frr:.2%})")
    table.add_row(
        "FRR upper bound (95%, Clopper-Pearson)",
        f"{result.frr_upper_bound:.2%} [{result.guarantee}: target {t.target_frr:.2%}]",
    )
    table.add_row("smallest target this set supports", f"{result.min_supported_frr:.2%}")
    if result.recall is not None and result.recall_ci is not None:
        table.add_row(
            "recall on defects",
            f"{result.recall:.2%} (95% CI {result.recall_ci[0]:.2%}-{result.recall_ci[1]:.2%})",
        )
    for warning in result.warnings:
        # Warnings quote file names, which must not be read as Rich markup ("[b]" in a name).
        table.add_row("[yellow]warning[/yellow]", escape(warning))
    console.print(table)


def _metrics_table(run: Any, title: str) -> Table:
    table = Table(title=title)
    for column in (
        "set",
        "n good",
        "n defect",
        "image AUROC",
        "pixel AUROC",
        "AU-PRO",
        "best F1",
        "recall @ FRR<=1%",
        "FRR achieved",
    ):
        table.add_column(column, justify="right" if column != "set" else "left")

    def fmt(value: float | None, pct: bool = False) -> str:
        if value is None:
            return "-"
        return f"{value:.1%}" if pct else f"{value:.3f}"

    rows = [("all", run.summary.overall), *sorted(run.summary.per_type.items())]
    for name, m in rows:
        table.add_row(
            name,
            str(m.n_good),
            str(m.n_defect),
            fmt(m.image_auroc),
            fmt(m.pixel_auroc),
            fmt(m.au_pro),
            fmt(m.best_f1),
            fmt(m.recall_at_frr, True),
            fmt(m.achieved_frr, True),
        )
    return table


def _operating_table(point: Any) -> Table:
    t = point.thresholds
    table = _kv_table(f"At the bundle's thresholds (version {t.version})")
    table.add_row("reject / review threshold", f"{t.reject:.4g} / {t.review:.4g}")
    table.add_row(
        "false-reject rate on good test parts",
        f"{point.frr:.2%} (95% upper bound {point.frr_upper_bound:.2%}, n={point.n_good})",
    )
    if point.recall is not None:
        lo, hi = point.recall_ci
        table.add_row(
            "recall on defective test parts",
            f"{point.recall:.2%} (95% CI {lo:.2%}-{hi:.2%}, n={point.n_defect})",
        )
    table.add_row("sent to review", f"{point.review_rate:.2%}")
    return table


@app.command("evaluate")
def evaluate_command(
    bundle: Annotated[Path, typer.Argument(help="Trained bundle folder.")],
    data: Annotated[Path, typer.Argument(help="Dataset folder with a test split.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write all metrics as JSON here.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write the HTML validation report here.")] = None,
) -> None:
    """Evaluate a bundle on a dataset's test split: table, JSON and optional HTML report."""
    from flawscope.bundle import read_bundle
    from flawscope.data.datasets import load_dataset

    # Fail before scoring, not after it, on a bad bundle, dataset or output path.
    read_bundle(bundle)
    dataset = load_dataset(data)
    if not dataset.test:
        raise InputError(
            dataset.root, "no test images: evaluation needs a test/ split (good and defective parts)"
        )
    for target in (json_out, report):
        if target is not None and target.is_dir():
            raise InputError(target, "is a folder; give a file name to write")

    from flawscope.evaluate.run import evaluate_bundle

    with progress_bars() as progress:
        run = evaluate_bundle(bundle, data, report=report, progress=progress)
    console.print(_metrics_table(run, f"Evaluation of {escape(str(bundle))} on {escape(str(data))}"))
    if run.operating_point is not None:
        console.print(_operating_table(run.operating_point))
    else:
        console.print(
            "[yellow]No calibrated thresholds in this bundle: "
            "run 'flawscope calibrate' for verdicts.[/yellow]"
        )
    console.print(f"{len(run.samples)} images at {len(run.samples) / run.predict_seconds:.1f} img/s")
    payload = json.dumps(run.to_dict(), indent=2)
    target = json_out or Path(bundle) / "evaluation.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(payload)
    console.print(f"metrics JSON: {target}")
    if report:
        console.print(f"report: {report}")
    _print_skipped(run.skipped)


@app.command("calibrate")
def calibrate_command(
    bundle: Annotated[Path, typer.Argument(help="Trained bundle folder.")],
    good_images: Annotated[
        Path, typer.Argument(help="Folder of held-out good images (not used in training).")
    ],
    target_frr: Annotated[float, typer.Option(help="False-reject rate to stay under, in (0, 0.5).")] = 0.01,
    defects: Annotated[
        Path | None, typer.Option(help="Optional folder of defective images to report recall.")
    ] = None,
    review_rate: Annotated[float | None, typer.Option(help="Share of good parts to send to review.")] = None,
    review_threshold: Annotated[
        float | None, typer.Option(help="Explicit review threshold (raw score).")
    ] = None,
) -> None:
    """Set thresholds for a target false-reject rate, with its statistical bound (new version)."""
    from flawscope.bundle import read_bundle
    from flawscope.decide.calibration import MIN_GOOD
    from flawscope.decide.workflow import calibrate_bundle, check_calibration_options

    check_calibration_options(target_frr, review_rate, review_threshold)
    read_bundle(bundle)
    good, names, skipped = _read_images(good_images)
    if len(good) < MIN_GOOD:
        raise InputError(
            good_images,
            f"{len(good)} readable good image(s); calibration needs at least {MIN_GOOD} held-out good images",
        )
    bad: list[Any] = []
    if defects:
        bad, _, skipped_bad = _read_images(defects)
        skipped += skipped_bad
    _print_skipped(skipped)
    with progress_bars() as progress:
        result = calibrate_bundle(
            bundle,
            good,
            target_frr=target_frr,
            defect_images=bad,
            review_rate=review_rate,
            review_threshold=review_threshold,
            names=names,
            progress=progress,
        )
    _print_calibration(result)


def _read_images(folder: Path) -> tuple[list[Any], list[str], list[tuple[str, str]]]:
    """Read a flat folder's images, skipping unusable files: ``(images, paths, skipped)``."""
    from flawscope.data.datasets import read_image_folder

    loaded = read_image_folder(folder)
    return list(loaded.images), [s.path for s in loaded.samples], list(loaded.skipped)


@app.command("export")
def export_command(
    bundle: Annotated[Path, typer.Argument(help="Trained (and calibrated) bundle folder.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Deployable bundle folder (default: BUNDLE-onnx).")
    ] = None,
    format: Annotated[str, typer.Option("--format", help="Export format.")] = "onnx",
    int8: Annotated[bool, typer.Option(help="Also write an INT8 graph calibrated on good images.")] = False,
    calibration_images: Annotated[
        Path | None,
        typer.Option(help="Good images to calibrate INT8 and refit its head on (default: the training set)."),
    ] = None,
    validation_data: Annotated[
        Path | None,
        typer.Option(
            help="Dataset whose labelled test split measures INT8's AUROC loss "
            "(default: the training dataset)."
        ),
    ] = None,
) -> None:
    """Write a deployable, torch-free bundle (ONNX graph, thresholds, manifest)."""
    from flawscope.bundle import MANIFEST, read_bundle

    if format != "onnx":
        raise InputError("--format", f"{format!r} is not supported; the only format is 'onnx'")
    source = read_bundle(bundle)
    if "deploy" in source.manifest:
        raise InputError(bundle, "is already a deployable bundle; export the trained bundle it came from")
    target = output or Path(f"{bundle}-onnx")
    if target.resolve() == Path(bundle).resolve():
        raise InputError(
            "--output", "the deployable bundle must go to a folder other than the trained bundle"
        )
    if target.is_dir() and any(target.iterdir()) and not (target / MANIFEST).is_file():
        raise InputError(target, "folder is not empty and is not a bundle; refusing to write into it")
    from flawscope.export.inputs import int8_inputs
    from flawscope.export.onnx_export import export_bundle

    if not int8:
        deployed = export_bundle(bundle, target)
    else:
        inputs = int8_inputs(source.manifest, calibration_images, validation_data)
        _print_skipped(inputs.skipped)
        for note in inputs.notes:
            console.print(f"[yellow]note: {note}[/yellow]")
        with console.status(f"INT8: refitting the head on {len(inputs.refit)} good images, validating"):
            deployed = export_bundle(bundle, target, **inputs.export_args())
    deploy = deployed.manifest["deploy"]
    graphs = ", ".join(deploy["onnx_sha256"])
    console.print(f"deployable bundle: {deployed.path} (graphs: {graphs})")
    if int8:
        from flawscope.runtime.inspector import int8_warning

        checked = deploy.get("int8_validation")
        if checked:
            console.print(
                f"INT8 image AUROC {checked['image_auroc_int8']:.4f} vs fp32 "
                f"{checked['image_auroc_fp32']:.4f} on {checked['n_good']} good + "
                f"{checked['n_defect']} defective parts"
            )
        warning = int8_warning(deploy)
        if warning:
            console.print(f"[yellow]warning: {warning}.[/yellow]")
    if not deployed.thresholds:
        console.print(
            "[yellow]warning: no calibrated thresholds; the runtime can score but not give verdicts.[/yellow]"
        )


@app.command("demo")
def demo_command(
    out: Annotated[Path, typer.Option(help="Working folder for the dataset, bundles and report.")] = Path(
        "demo-out"
    ),
    texture: Annotated[str, typer.Option(help="Synthetic part texture.")] = "brushed_metal",
    model: Annotated[str, typer.Option(help="Registered model name.")] = "padim",
    seed: Annotated[int, typer.Option(help="Seed of the synthetic dataset.")] = 0,
) -> None:
    """The whole job on generated parts: dataset, train, calibrate, evaluate, report, export, inspect."""
    import shutil
    from collections import Counter

    from flawscope.data.synthetic import SyntheticSpec, write_dataset
    from flawscope.decide.workflow import calibrate_bundle
    from flawscope.evaluate.run import evaluate_bundle
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.train import train
    from flawscope.runtime import Inspector

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    spec = SyntheticSpec(
        texture=texture, size=(256, 256), n_train=200, n_test_good=60, n_test_defect_per_type=12, seed=seed
    )
    console.rule("1. synthetic dataset")
    dataset = write_dataset(out / f"synthetic-{texture}", spec)
    console.print(
        f"{dataset.root}: {len(dataset.train)} good for training, {len(dataset.test_good)} good + "
        f"{len(dataset.test_defect)} defective for testing ({', '.join(dataset.defect_types)})"
    )
    console.rule("2. train (good parts only), 30% of them held out for calibration")
    bundle = out / "bundle"
    with progress_bars() as progress:
        result = train(dataset, bundle, model=model, holdout=0.3, progress=progress)
        console.print(f"fitted {model} on {result.n_train} images in {result.fit_seconds:.1f} s")
        console.rule("3. calibrate for a 1% false-reject target")
        calibration = calibrate_bundle(
            bundle,
            result.holdout_images,
            target_frr=0.01,
            review_rate=0.05,
            names=result.holdout_paths,
            progress=progress,
        )
    _print_calibration(calibration)
    console.rule("4. evaluate on the test split, with the HTML report")
    report = out / "report.html"
    with progress_bars() as progress:
        run = evaluate_bundle(bundle, dataset.root, report=report, progress=progress)
    console.print(_metrics_table(run, "Validation on the synthetic test split"))
    if run.operating_point is not None:
        console.print(_operating_table(run.operating_point))
    console.rule("5. export to ONNX and inspect with the torch-free runtime")
    deployed = export_bundle(bundle, out / "bundle-onnx")
    inspector = Inspector.load(deployed.path)
    images = _read_test(dataset)
    verdicts = inspector.inspect_many(images)
    counts = Counter(v.outcome.value for v in verdicts)
    console.print(f"runtime verdicts on {len(verdicts)} test parts: {dict(counts)}")
    console.print(f"bundle: {bundle}\ndeployable bundle: {deployed.path}\nreport: {report}")


def _read_test(dataset: Any) -> list[Any]:
    from flawscope.data.datasets import read_samples

    return read_samples(dataset.test, masks=False).images


audit_app = typer.Typer(help="Verify and export the audit trail.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
DEFAULT_AUDIT = "sqlite:///flawscope-audit.db"


@audit_app.command("verify")
def audit_verify_command(
    audit: Annotated[str, typer.Option(help="SQLAlchemy URL of the audit database.")] = DEFAULT_AUDIT,
    expected_head: Annotated[
        str | None, typer.Option(help="Published head 'SEQ:HASH' to detect truncation.")
    ] = None,
) -> None:
    """Prove the audit log is intact, or name the first altered record (exit code 1)."""
    from flawscope.audit import AuditLog, ChainHead

    head = None
    if expected_head:
        seq, _, digest = expected_head.partition(":")
        if not seq.isdigit() or len(digest) != 64:
            raise FlawscopeError(f"--expected-head {expected_head!r}: expected SEQ:SHA256")
        head = ChainHead(int(seq), digest)
    with AuditLog.open(audit, read_only=True) as log:
        result = log.verify(expected_head=head)
        current = log.head()
    if result.ok:
        console.print(
            f"[green]intact[/green]: {result.n_records} records, head {current.seq}:{current.record_hash}"
        )
    else:
        console.print(f"[red]ALTERED[/red]: first bad record seq={result.first_bad_seq}: {result.problem}")
        raise typer.Exit(1)


@audit_app.command("export")
def audit_export_command(
    output: Annotated[Path, typer.Option("-o", "--output", help="CSV or Parquet file to write.")],
    audit: Annotated[str, typer.Option(help="SQLAlchemy URL of the audit database.")] = DEFAULT_AUDIT,
    format: Annotated[
        str | None, typer.Option("--format", help="csv or parquet (default: from the suffix).")
    ] = None,
    since: Annotated[int | None, typer.Option(help="Only records with seq greater than this.")] = None,
) -> None:
    """Export inspection records for MES/BI."""
    from flawscope.audit import AuditLog

    fmt = format or ("parquet" if output.suffix.lower() == ".parquet" else "csv")
    with AuditLog.open(audit, read_only=True) as log:
        count = log.export(output, format=fmt, since=since)
    console.print(f"exported {count} records to {output} ({fmt})")


@app.command("inspect")
def inspect_command(
    bundle: Annotated[Path, typer.Argument(help="Deployable bundle folder (from 'flawscope export').")],
    source: Annotated[
        str,
        typer.Option(
            help="Folder path, watch://DIR, video://FILE, rtsp://, usb://N, gige://ID or sim://DATA."
        ),
    ],
    audit: Annotated[str, typer.Option(help="SQLAlchemy URL of the audit database.")] = DEFAULT_AUDIT,
    store_images: Annotated[Path | None, typer.Option(help="Keep every part's image in this folder.")] = None,
    station: Annotated[str, typer.Option(help="Station name written into every record.")] = "station-1",
    batch_size: Annotated[int, typer.Option(help="Most parts inspected together.")] = 8,
    queue_size: Annotated[int, typer.Option(help="Parts waiting before backpressure applies.")] = 64,
    backpressure: Annotated[
        str, typer.Option(help="'block' the source, or 'drop' (recorded not_inspected).")
    ] = "block",
    int8: Annotated[bool, typer.Option(help="Use the INT8 graph.")] = False,
) -> None:
    """Run the line: acquire, inspect, decide, record (hash-chained audit), publish. Ctrl-C stops cleanly."""
    import signal
    import threading

    from rich.live import Live

    from flawscope.acquire import open_source
    from flawscope.audit import AuditLog
    from flawscope.line import run_line
    from flawscope.runtime import Inspector

    inspector = Inspector.load(bundle, int8=int8)
    if inspector.thresholds is None:
        raise FlawscopeError(f"{bundle}: no calibrated thresholds; run 'flawscope calibrate' before export")
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        err_console.print(f"[yellow]{signal.Signals(signum).name}: finishing the parts in flight...[/yellow]")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_stop)

    def status_text(summary: Any) -> str:
        counts = " ".join(f"{k}={v}" for k, v in summary.counts.items() if v)
        return (
            f"{summary.station}: {summary.recorded} recorded, {summary.recent_throughput:.1f} parts/s, "
            f"{counts or 'no parts yet'}, queues {dict(summary.queues)}"
        )

    with (
        AuditLog.open(audit) as log,
        open_source(source) as frames,
        Live(console=err_console, transient=True) as live,
    ):
        summary = run_line(
            frames,
            inspector,
            log,
            station=station,
            store_images=store_images,
            batch_size=batch_size,
            queue_size=queue_size,
            backpressure=backpressure,
            stop_event=stop,
            on_status=lambda s: live.update(status_text(s)),
        )
        head = log.head()
    table = _kv_table(f"Line summary ({summary.stop_reason})")
    table.add_row("parts recorded", str(summary.recorded))
    for outcome, n in summary.counts.items():
        table.add_row(f"  {outcome}", str(n))
    table.add_row("dropped (recorded not_inspected)", str(summary.dropped))
    table.add_row("missed by the source", str(summary.missed))
    table.add_row("throughput", f"{summary.throughput:.1f} parts/s over {summary.elapsed_s:.1f} s")
    for name, lat in summary.stages.items():
        table.add_row(f"latency {name}", f"mean {lat.mean_ms:.1f} ms, p99 {lat.p99_ms:.1f} ms")
    table.add_row("audit head", f"{head.seq}:{head.record_hash}")
    console.print(table)
    if summary.unrecorded:
        raise FlawscopeError(f"{summary.unrecorded} parts could not be recorded: treat them as rejects")


def main() -> None:
    """Console entry point: user errors are one clear line and exit code 2, never a traceback."""
    try:
        app()
    except FlawscopeError as exc:
        # One line, never wrapped, and the message is text: a path may contain "[...]".
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)


if __name__ == "__main__":
    main()

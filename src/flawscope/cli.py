"""The ``flawscope`` command line: train, evaluate, calibrate, export, inspect, audit, demo."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from flawscope.cli_common import console, err_console, progress_bars, setup_logging
from flawscope.errors import FlawscopeError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)


def _parse_params(items: list[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise FlawscopeError(f"--param {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False) -> None:
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
    image_size: Annotated[int, typer.Option(help="Canvas size along the short side (px).")] = 256,
    holdout: Annotated[float, typer.Option(help="Fraction of good images held out to calibrate thresholds.")] = 0.0,
    target_frr: Annotated[float, typer.Option(help="False-reject target when calibrating on the hold-out.")] = 0.01,
    param: Annotated[list[str] | None, typer.Option(help="Extra hyperparameter KEY=VALUE (repeatable).")] = None,
) -> None:
    """Fit an anomaly model on good parts and save a bundle."""
    from flawscope.models.train import train

    params = {"backbone": backbone, "image_size": image_size, **_parse_params(param)}
    with progress_bars() as progress:
        result = train(data, output, model=model, holdout=holdout, params=params, progress=progress)
    table = Table(title=f"Trained {model} ({backbone})")
    table.add_column("item")
    table.add_column("value")
    pre = result.model.preprocessing_
    assert pre is not None
    table.add_row("training images", str(result.n_train))
    table.add_row("held out for calibration", str(len(result.holdout_images)))
    table.add_row("canvas (h x w)", f"{pre.height} x {pre.width} ({pre.mode})")
    table.add_row("fit time", f"{result.fit_seconds:.1f} s")
    table.add_row("bundle", str(output))
    table.add_row("model hash", result.bundle.model_hash[:16])
    console.print(table)
    if result.holdout_images:
        from flawscope.decide.workflow import calibrate_bundle

        report = calibrate_bundle(output, result.holdout_images, target_frr=target_frr,
                                  names=result.holdout_paths, progress=progress)
        _print_calibration(report)
    _print_skipped(result.skipped)


def _print_skipped(skipped: list[tuple[str, str]]) -> None:
    if skipped:
        err_console.print(f"[yellow]{len(skipped)} file(s) skipped:[/yellow]")
        for path, problem in skipped:
            err_console.print(f"  {path}: {problem}")


def _print_calibration(report: Any) -> None:
    from flawscope.decide.workflow import calibration_table

    console.print(calibration_table(report))


def _metrics_table(run: Any, title: str) -> Table:
    table = Table(title=title)
    for column in ("set", "n good", "n defect", "image AUROC", "pixel AUROC", "AU-PRO", "best F1",
                   "recall @ FRR<=1%", "FRR achieved"):
        table.add_column(column, justify="right" if column != "set" else "left")

    def fmt(value: float | None, pct: bool = False) -> str:
        if value is None:
            return "-"
        return f"{value:.1%}" if pct else f"{value:.3f}"

    rows = [("all", run.summary.overall), *sorted(run.summary.per_type.items())]
    for name, m in rows:
        table.add_row(name, str(m.n_good), str(m.n_defect), fmt(m.image_auroc), fmt(m.pixel_auroc), fmt(m.au_pro),
                      fmt(m.best_f1), fmt(m.recall_at_frr, True), fmt(m.achieved_frr, True))
    return table


def _operating_table(point: Any) -> Table:
    t = point.thresholds
    table = Table(title=f"At the bundle's thresholds (version {t.version})")
    table.add_column("item")
    table.add_column("value")
    table.add_row("reject / review threshold", f"{t.reject:.4g} / {t.review:.4g}")
    table.add_row("false-reject rate on good test parts", f"{point.frr:.2%} (95% upper bound {point.frr_upper_bound:.2%}, n={point.n_good})")
    if point.recall is not None:
        lo, hi = point.recall_ci
        table.add_row("recall on defective test parts", f"{point.recall:.2%} (95% CI {lo:.2%}-{hi:.2%}, n={point.n_defect})")
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
    from flawscope.evaluate.run import evaluate_bundle

    with progress_bars() as progress:
        run = evaluate_bundle(bundle, data, report=report, progress=progress)
    console.print(_metrics_table(run, f"Evaluation of {bundle} on {data}"))
    if run.operating_point is not None:
        console.print(_operating_table(run.operating_point))
    else:
        console.print("[yellow]No calibrated thresholds in this bundle: run 'flawscope calibrate' for verdicts.[/yellow]")
    console.print(f"{len(run.samples)} images at {len(run.samples) / run.predict_seconds:.1f} img/s")
    payload = json.dumps(run.to_dict(), indent=2)
    target = json_out or Path(bundle) / "evaluation.json"
    target.write_text(payload)
    console.print(f"metrics JSON: {target}")
    if report:
        console.print(f"report: {report}")
    _print_skipped(run.skipped)


@app.command("calibrate")
def calibrate_command(
    bundle: Annotated[Path, typer.Argument(help="Trained bundle folder.")],
    good_images: Annotated[Path, typer.Argument(help="Folder of held-out good images (not used in training).")],
    target_frr: Annotated[float, typer.Option(help="False-reject rate to stay under, in (0, 0.5).")] = 0.01,
    defects: Annotated[Path | None, typer.Option(help="Optional folder of defective images to report recall.")] = None,
    review_rate: Annotated[float | None, typer.Option(help="Share of good parts to send to review.")] = None,
    review_threshold: Annotated[float | None, typer.Option(help="Explicit review threshold (raw score).")] = None,
) -> None:
    """Set thresholds for a target false-reject rate, with its statistical bound (new version)."""
    from flawscope.data.datasets import list_images
    from flawscope.data.imageio import read_image
    from flawscope.decide.workflow import calibrate_bundle

    def read_all(folder: Path) -> tuple[list[Any], list[str]]:
        images, names, skipped = [], [], []
        for path in list_images(folder):
            try:
                images.append(read_image(path))
                names.append(path)
            except FlawscopeError as exc:
                skipped.append((path, str(exc)))
        _print_skipped(skipped)
        return images, names

    good, names = read_all(good_images)
    bad = read_all(defects)[0] if defects else []
    with progress_bars() as progress:
        result = calibrate_bundle(bundle, good, target_frr=target_frr, defect_images=bad, review_rate=review_rate,
                                  review_threshold=review_threshold, names=names, progress=progress)
    _print_calibration(result)


@app.command("export")
def export_command(
    bundle: Annotated[Path, typer.Argument(help="Trained (and calibrated) bundle folder.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Deployable bundle folder (default: BUNDLE-onnx).")] = None,
    format: Annotated[str, typer.Option("--format", help="Export format.")] = "onnx",
    int8: Annotated[bool, typer.Option(help="Also write an INT8 graph calibrated on good images.")] = False,
    calibration_images: Annotated[Path | None, typer.Option(help="Good images for INT8 calibration (default: the training set).")] = None,
) -> None:
    """Write a deployable, torch-free bundle (ONNX graph, thresholds, manifest)."""
    from flawscope.data.datasets import list_images, load_dataset
    from flawscope.data.imageio import read_image
    from flawscope.export.onnx_export import export_bundle

    if format != "onnx":
        raise FlawscopeError(f"--format {format!r}: only 'onnx' is supported")
    target = output or Path(f"{bundle}-onnx")
    images = []
    if int8:
        from flawscope.bundle import read_bundle

        if calibration_images is not None:
            paths = list_images(calibration_images)
        else:
            paths = [s.path for s in load_dataset(read_bundle(bundle).manifest["training"]["dataset"]).train]
        images = [read_image(p) for p in paths[:64]]
    deployed = export_bundle(bundle, target, int8=int8, calibration_images=images)
    console.print(f"deployable bundle: {deployed.path} (graphs: {', '.join(deployed.manifest['deploy']['onnx_sha256'])})")
    if not deployed.thresholds:
        console.print("[yellow]warning: no calibrated thresholds; the runtime can score but not give verdicts.[/yellow]")


@app.command("demo")
def demo_command(
    out: Annotated[Path, typer.Option(help="Working folder for the dataset, bundles and report.")] = Path("demo-out"),
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
    spec = SyntheticSpec(texture=texture, size=(256, 256), n_train=200, n_test_good=60,
                         n_test_defect_per_type=12, seed=seed)
    console.rule("1. synthetic dataset")
    dataset = write_dataset(out / "dataset", spec)
    console.print(f"{dataset.root}: {len(dataset.train)} good for training, {len(dataset.test_good)} good + "
                  f"{len(dataset.test_defect)} defective for testing ({', '.join(dataset.defect_types)})")
    console.rule("2. train (good parts only), 30% of them held out for calibration")
    bundle = out / "bundle"
    with progress_bars() as progress:
        result = train(dataset, bundle, model=model, holdout=0.3, progress=progress)
        console.print(f"fitted {model} on {result.n_train} images in {result.fit_seconds:.1f} s")
        console.rule("3. calibrate for a 1% false-reject target")
        calibration = calibrate_bundle(bundle, result.holdout_images, target_frr=0.01, review_rate=0.05,
                                       names=result.holdout_paths, progress=progress)
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


def main() -> None:
    """Console entry point: user errors are one clear line and exit code 2, never a traceback."""
    try:
        app()
    except FlawscopeError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)


if __name__ == "__main__":
    main()

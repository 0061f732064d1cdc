"""``flawscope evaluate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from flawscope.cli.common import check_writable, console, progress_bars, unwritable
from flawscope.cli.render import metrics_table, operating_table, print_skipped, supervised_table
from flawscope.errors import InputError


def evaluate_command(
    bundle: Annotated[Path, typer.Argument(help="Trained bundle folder.")],
    data: Annotated[Path, typer.Argument(help="Dataset folder with a test split.")],
    json_out: Annotated[
        Path | None,
        typer.Option(
            "--json", metavar="FILE", help="Write all metrics as JSON here (default: BUNDLE/evaluation.json)."
        ),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Write the HTML validation report here.")
    ] = None,
    cv: Annotated[
        int | None,
        typer.Option(
            "--cv",
            min=2,
            metavar="K",
            help="K-fold cross-validation of the bundle's configuration on DATA (labelled models).",
        ),
    ] = None,
) -> None:
    """Evaluate a bundle on a dataset's test split: table, JSON and optional HTML report."""
    from flawscope.bundle import read_bundle
    from flawscope.data.datasets import load_dataset

    # Fail before scoring, not after it, on a bad bundle, dataset or output path.
    manifest = read_bundle(bundle).manifest
    for target in (json_out, report):
        if target is not None and target.is_dir():
            raise InputError(target, "is a folder; give a file name to write")
        if target is not None:
            check_writable(target, "metrics" if target is json_out else "report")
    # A bundle on a read-only share can still be evaluated; its manifest just keeps no metrics.
    read_only = unwritable(bundle)
    if read_only and json_out is None:
        raise InputError(bundle, f"cannot write the metrics into the bundle ({read_only}); give --json FILE")
    if cv is not None:
        _cross_validate(bundle, data, cv, json_out)
        return
    if manifest.training.task is None:
        dataset = load_dataset(data)
        if not dataset.test:
            raise InputError(
                dataset.root, "no test images: evaluation needs a test/ split (good and defective parts)"
            )

    from flawscope.evaluate.run import evaluate_bundle

    with progress_bars() as progress:
        run = evaluate_bundle(bundle, data, report=report, progress=progress, store_metrics=not read_only)
    if read_only:
        console.print(
            f"[yellow]note: metrics not stored in the bundle's manifest ({escape(read_only)})[/yellow]"
        )
    console.print(metrics_table(run, f"Evaluation of {escape(str(bundle))} on {escape(str(data))}"))
    for note in run.summary.overall.notes:
        console.print(f"[yellow]note: {escape(note)}[/yellow]")
    if run.supervised:
        console.print(supervised_table(run.supervised))
    if run.operating_point is not None:
        console.print(operating_table(run.operating_point))
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
    print_skipped(run.skipped)


def _cross_validate(bundle: Path, data: Path, folds: int, json_out: Path | None) -> None:
    from flawscope.evaluate.crossval import cross_validate_bundle

    with progress_bars() as progress:
        result = cross_validate_bundle(bundle, data, folds, progress=progress)
    console.print(supervised_table(result, f"{folds}-fold cross-validation of {escape(str(bundle))}"))
    target = json_out or Path(bundle) / "crossval.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2, default=float))
    console.print(f"metrics JSON: {target}")

"""``flawscope models`` and ``flawscope train``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.markup import escape
from rich.table import Table

from flawscope.cli.common import check_writable, console, progress_bars
from flawscope.cli.render import kv_table, print_calibration, print_skipped
from flawscope.cli.usage import plain_text
from flawscope.errors import InputError


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


def models_command() -> None:
    """List the registered models (the task each learns, 'train --task') and the available backbones."""
    from flawscope.features.backbones import BACKBONES
    from flawscope.models import MODELS

    table = Table(title="Models (train --task TASK --model NAME; anomaly models learn from good parts alone)")
    table.add_column("name", no_wrap=True)
    table.add_column("task", no_wrap=True)
    table.add_column("description", overflow="fold")
    table.add_column("hyperparameters (defaults)", overflow="fold")
    # Good-parts models first, then those that learn from labels, by task.
    for name, cls in sorted(
        MODELS.items(), key=lambda item: (item[1].task != "anomaly", str(item[1].task), item[0])
    ):
        doc = plain_text((cls.__doc__ or "").strip().splitlines()[0])
        table.add_row(
            name,
            str(cls.task),
            escape(doc),
            escape(", ".join(f"{k}={v}" for k, v in cls.default_params().items())),
        )
    console.print(table)
    backbones = Table(title="Backbones")
    for column in ("name", "weights from", "licence"):
        backbones.add_column(column, overflow="fold")
    for spec in BACKBONES.values():
        backbones.add_row(spec.name, spec.package, spec.licence)
    console.print(backbones)


def _calibrate_on_holdout(result: Any, output: Path, target_frr: float) -> None:
    """Calibrates the new bundle on the images training held out, if any, and lists what was skipped."""
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
        print_calibration(report)
    print_skipped(result.skipped)


def _train_labelled(
    data: Path,
    output: Path,
    task: str,
    holdout: float,
    target_frr: float,
    params: dict[str, Any],
    group_pattern: str | None,
    classes: str | None,
    model_name: str | None = None,
) -> None:
    from flawscope.data.labelled import load_labelled

    labelled = load_labelled(data, group_pattern)  # layout errors before torch is imported

    from flawscope.models.train_supervised import train_supervised

    expected = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    with progress_bars() as progress:
        result = train_supervised(
            labelled if data.is_dir() else data,
            output,
            task,
            holdout,
            params,
            group_pattern,
            expected,
            progress,
            model_name,
        )
    model = result.model
    log = model.training_["log"]
    table = kv_table(f"Trained {model.name} (task {task})")
    counts = model.training_["train_counts"]
    table.add_row("classes (training images)", ", ".join(f"{c} ({counts.get(c, 0)})" for c in sorted(counts)))
    split = model.training_["split"]
    table.add_row("training / validation images", f"{split['train']} / {split['validation']}")
    table.add_row("held out for calibration", str(len(result.holdout_images)))
    tuned = log.get("finetune")
    if tuned:
        found = tuned["validation_accuracy"]
        accuracy = found[tuned["best_epoch"] - 1] if found else None
        table.add_row(
            f"trunk fine-tuned ({tuned['mode']}): epochs (best)",
            f"{tuned['epochs_run']} ({tuned['best_epoch']})"
            + (f", validation accuracy {accuracy:.3f}" if accuracy is not None else ""),
        )
    table.add_row("epochs (best)", f"{log['epochs_run']} ({log['best_epoch']})")
    if log.get("ece_after") is not None:
        ece = f"{log['ece_before']:.3f} -> {log['ece_after']:.3f} (T = {log['temperature']:.2f})"
        table.add_row("validation ECE (before -> after temperature)", ece)
    boxes = log.get("box_head") or {}
    if "epochs_run" in boxes:
        # The box head stops early on its own validation loss: its progress bar ends short of it.
        most = getattr(model, "params", {}).get("box_epochs")
        table.add_row(
            "box head: epochs (best)",
            f"{boxes['epochs_run']}" + (f" of {most}" if most else "") + f" ({boxes['best_epoch']})",
        )
    if "box_level" in boxes:
        table.add_row("region level of the boxes", _box_level_row(boxes))
    table.add_row("outputs", ", ".join(model.declaration().output_names))
    table.add_row("fit time", f"{result.fit_seconds:.1f} s")
    table.add_row("bundle", escape(str(output)))
    console.print(table)
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    _calibrate_on_holdout(result, output, target_frr)


def _box_level_row(box_log: dict[str, Any]) -> str:
    """A detector's learnt region level, with the validation F1 that chose it."""
    level = box_log["box_level"]
    if level is None:
        return "default (no validation boxes matched)"
    row = next(r for r in box_log.get("region_levels", []) if r["level"] == level)
    return f"{level:g} (validation F1 {row['f1']:.3f}; thresholds' region_level overrides it)"


def train_command(
    data: Annotated[Path, typer.Argument(help="Dataset folder (MVTec AD layout or good/ [bad/] folders).")],
    output: Annotated[Path, typer.Option("-o", "--output", metavar="DIR", help="Bundle folder to write.")],
    model: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="Registered model (see 'flawscope models'); default padim, with --task that task's model.",
        ),
    ] = None,
    backbone: Annotated[
        str, typer.Option(metavar="NAME", help="Feature backbone (see 'flawscope models').")
    ] = "efficientnet_lite0",
    image_size: Annotated[
        int, typer.Option(min=32, metavar="PX", help="Canvas size along the short side (px).")
    ] = 256,
    holdout: Annotated[
        float,
        typer.Option(
            metavar="FRACTION",
            help="Share of the good images kept out of training to calibrate thresholds on (e.g. 0.2).",
        ),
    ] = 0.0,
    target_frr: Annotated[
        float, typer.Option(metavar="RATE", help="False-reject target when calibrating on the hold-out.")
    ] = 0.01,
    param: Annotated[
        list[str] | None,
        typer.Option(metavar="KEY=VALUE", help="Extra hyperparameter, e.g. aggregate=3 (repeatable)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the bundle already in the output folder.")
    ] = False,
    task: Annotated[
        Literal["classify", "segment", "detect", "mixed"] | None,
        typer.Option(
            help="Learn from labelled defects: classify, segment, detect or mixed (DATA: MVTec layout with "
            "train/<class>/, one folder per class, or a CSV of path,label[,mask][,group]). Without it, "
            "--model learns from good parts.",
        ),
    ] = None,
    group_pattern: Annotated[
        str | None,
        typer.Option(
            metavar="REGEX",
            help="Regular expression on file names naming each image's part (e.g. 'kos\\d+'); "
            "a part's images are never split apart.",
        ),
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(metavar="A,B,...", help="Classes the labels must come from (default: those found)."),
    ] = None,
    station: Annotated[
        bool,
        typer.Option(
            "--station",
            help="With --task: add a good-parts anomaly head on the same trunk pass "
            "(PaDiM; --param anomaly=patchcore for PatchCore).",
        ),
    ] = False,
) -> None:
    """Fit a model (good parts only, or with --task from labelled defects) and save a bundle."""
    from flawscope.data.datasets import load_dataset

    # Cheap checks first (no torch yet): a typo costs a second, not a model import and a fit.
    params = {"backbone": backbone, "image_size": image_size, **_parse_params(param)}
    _check_output(output, overwrite)
    check_writable(output, "bundle")
    if holdout > 0:
        from flawscope.decide.workflow import check_calibration_options

        check_calibration_options(target_frr)
    if task is not None:
        if station:  # PaDiM unless --param anomaly names the head
            params.setdefault("anomaly", "padim")
        _train_labelled(data, output, task, holdout, target_frr, params, group_pattern, classes, model)
        return
    model = model or "padim"
    dataset = load_dataset(data)

    from flawscope.models.train import train

    with progress_bars() as progress:
        result = train(dataset, output, model=model, holdout=holdout, params=params, progress=progress)
    table = kv_table(f"Trained {model} ({backbone})")
    pre = result.model.preprocessing_
    assert pre is not None
    table.add_row("training images", str(result.n_train))
    table.add_row("held out for calibration", str(len(result.holdout_images)))
    table.add_row("canvas (h x w)", f"{pre.height} x {pre.width} ({pre.mode})")
    table.add_row("fit time", f"{result.fit_seconds:.1f} s")
    table.add_row("bundle", escape(str(output)))
    table.add_row("model hash", result.bundle.model_hash[:16])
    console.print(table)
    if not result.holdout_images:
        console.print(
            "[yellow]note: no good images were held out, so the bundle has no thresholds yet: "
            "calibrate it on good images it was not trained on ('flawscope calibrate BUNDLE "
            "GOOD_IMAGES'), or train with --holdout 0.2 to keep some aside.[/yellow]"
        )
    _calibrate_on_holdout(result, output, target_frr)

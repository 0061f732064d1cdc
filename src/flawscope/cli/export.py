"""``flawscope export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from flawscope.cli.common import check_writable, console
from flawscope.cli.render import print_skipped
from flawscope.errors import InputError


def export_command(
    bundle: Annotated[Path, typer.Argument(help="Trained (and calibrated) bundle folder.")],
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", metavar="DIR", help="Deployable bundle folder (default: BUNDLE-onnx)."
        ),
    ] = None,
    format: Annotated[Literal["onnx"], typer.Option("--format", help="Export format.")] = "onnx",
    int8: Annotated[
        bool, typer.Option("--int8", help="Also write an INT8 graph calibrated on good images.")
    ] = False,
    calibration_images: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Good images to calibrate INT8 and refit its head on (default: the training set).",
        ),
    ] = None,
    validation_data: Annotated[
        Path | None,
        typer.Option(
            metavar="DATA",
            help="Dataset whose labelled test split measures INT8's AUROC loss "
            "(default: the training dataset).",
        ),
    ] = None,
) -> None:
    """Write a deployable, torch-free bundle (ONNX graph, thresholds, manifest)."""
    from flawscope.bundle import MANIFEST, read_bundle

    if format != "onnx":
        raise InputError("--format", f"{format!r} is not supported; the only format is 'onnx'")
    source = read_bundle(bundle)
    if source.manifest.deploy is not None:
        raise InputError(bundle, "is already a deployable bundle; export the trained bundle it came from")
    target = output or Path(f"{bundle}-onnx")
    if target.resolve() == Path(bundle).resolve():
        raise InputError(
            "--output", "the deployable bundle must go to a folder other than the trained bundle"
        )
    if target.is_dir() and any(target.iterdir()) and not (target / MANIFEST).is_file():
        raise InputError(target, "folder is not empty and is not a bundle; refusing to write into it")
    check_writable(target, "deployable bundle")
    from flawscope.export.inputs import int8_inputs
    from flawscope.export.onnx_export import export_bundle

    if not int8:
        deployed = export_bundle(bundle, target)
    else:
        inputs = int8_inputs(source.manifest, calibration_images, validation_data)
        print_skipped(inputs.skipped)
        for note in inputs.notes:
            console.print(f"[yellow]note: {note}[/yellow]")
        with console.status(f"INT8: refitting the head on {len(inputs.refit)} good images, validating"):
            deployed = export_bundle(bundle, target, **inputs.export_args())
    deploy = deployed.manifest.deploy
    assert deploy is not None
    graphs = ", ".join(deploy.onnx_sha256)
    signer = deployed.manifest.signature.key_id if deployed.manifest.signature else "nobody"
    console.print(f"deployable bundle: {deployed.path} (graphs: {graphs}; signed by key {signer})")
    if int8:
        from flawscope.runtime.int8_notice import int8_warning

        checked = deploy.int8.validation if deploy.int8 is not None else None
        if checked and "image_auroc_int8" in checked:
            console.print(
                f"INT8 image AUROC {checked['image_auroc_int8']:.4f} vs fp32 "
                f"{checked['image_auroc_fp32']:.4f} on {checked['n_good']} good + "
                f"{checked['n_defect']} defective parts"
            )
        if checked and "map_int8" in checked:
            console.print(
                f"INT8 mAP@0.5 {checked['map_int8']:.4f} vs fp32 {checked['map_fp32']:.4f} on "
                f"{checked['n_images']} parts with {checked['n_boxes']} true boxes"
            )
        warning = int8_warning(deploy)
        if warning:
            console.print(f"[yellow]warning: {warning}.[/yellow]")
    if not deployed.thresholds.versions:
        console.print(
            "[yellow]warning: no calibrated thresholds; the runtime can score but not give verdicts.[/yellow]"
        )

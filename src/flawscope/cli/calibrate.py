"""``flawscope calibrate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flawscope.cli.common import console, progress_bars
from flawscope.cli.render import print_calibration, print_skipped
from flawscope.errors import InputError


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
    print_skipped(skipped)
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
    print_calibration(result)
    signature = read_bundle(bundle).manifest.signature
    if signature is not None:
        console.print(f"threshold version {result.thresholds.version} signed by key {signature.key_id}")


def _read_images(folder: Path) -> tuple[list[Any], list[str], list[tuple[str, str]]]:
    """Read a flat folder's images, skipping unusable files: ``(images, paths, skipped)``."""
    from flawscope.data.datasets import read_image_folder

    loaded = read_image_folder(folder)
    return list(loaded.images), [s.path for s in loaded.samples], list(loaded.skipped)

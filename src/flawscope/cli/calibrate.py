"""``flawscope calibrate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from flawscope.cli.common import check_writable, console, progress_bars
from flawscope.cli.render import print_calibration, print_skipped
from flawscope.declaration import GOOD
from flawscope.errors import InputError

# A review band this wide sends more good parts to a person than a station usually can afford:
# the option is a share of good parts, and 0.9 reads like "90% sure", which it is not.
REVIEW_RATE_WARN = 0.2


def calibrate_command(
    bundle: Annotated[Path, typer.Argument(help="Trained bundle folder.")],
    good_images: Annotated[
        Path | None,
        typer.Argument(
            help="Good images the bundle was not trained on: a folder of images, or a dataset "
            "(its train/good or good/ images are used). Not needed with --holdout-of."
        ),
    ] = None,
    holdout_of: Annotated[
        Path | None,
        typer.Option(
            metavar="DATA",
            help="Calibrate on the good images this bundle held out at training (train --holdout), "
            "found in its dataset folder DATA.",
        ),
    ] = None,
    target_frr: Annotated[
        float, typer.Option(metavar="RATE", help="False-reject rate to stay under, in (0, 0.5).")
    ] = 0.01,
    defects: Annotated[
        Path | None, typer.Option(metavar="DIR", help="Folder of defective images, to report recall.")
    ] = None,
    review_rate: Annotated[
        float | None,
        typer.Option(
            metavar="SHARE", help="Share of good parts to send to review, e.g. 0.02 (a review band)."
        ),
    ] = None,
    review_threshold: Annotated[
        float | None, typer.Option(metavar="SCORE", help="Explicit review threshold (raw score).")
    ] = None,
    reject: Annotated[
        float | None,
        typer.Option(
            metavar="SCORE",
            help="Set the reject threshold by hand, without images (no false-reject rate stands "
            "behind it): for a model trained on defect classes only, which every part fails with "
            "its category.",
        ),
    ] = None,
    allow_training_images: Annotated[
        bool,
        typer.Option(
            "--allow-training-images",
            help="Calibrate even on images the bundle was trained on (refused by default: it sets "
            "thresholds that reject more good parts than calibrated).",
        ),
    ] = False,
) -> None:
    """Set thresholds for a target false-reject rate, with its statistical bound (a new version).

    The good images must be new to the model: images it was trained on are refused (they are
    recognised by content). Use the hold-out kept at training (--holdout-of DATA) or other good
    parts.
    """
    if reject is not None:
        if good_images is not None or holdout_of is not None or review_rate is not None:
            raise InputError(
                "--reject", "sets thresholds by hand: give no images, --holdout-of or --review-rate"
            )
        _by_hand(bundle, reject, review_threshold)
        return
    if (good_images is None) == (holdout_of is None):
        # Before the imports below (torch, SciPy): a usage mistake is answered at once.
        raise InputError(
            "GOOD_IMAGES",
            "give a folder of good images or --holdout-of DATA (the bundle's own hold-out), one of them "
            "(or --reject SCORE to set the threshold by hand)",
        )
    from flawscope.bundle import read_bundle
    from flawscope.decide.calibration import MIN_GOOD
    from flawscope.decide.workflow import calibrate_bundle, check_calibration_options
    from flawscope.models.provenance import calibration_samples, check_not_trained_on, holdout_samples

    check_calibration_options(target_frr, review_rate, review_threshold)
    manifest = read_bundle(bundle).manifest
    declared = manifest.model.declaration
    if declared is not None and declared.classes and GOOD not in declared.classes:
        raise InputError(
            bundle,
            f"was trained without good parts (classes {', '.join(declared.classes)}): every part is a "
            "defect to it and it has no false-reject rate to calibrate; retrain with a good/ class, or "
            "set the threshold by hand (--reject 0.5: every part fails, with its category)",
        )
    check_writable(bundle, "new thresholds (the bundle's manifest)")
    if holdout_of is not None:
        samples = holdout_samples(manifest, holdout_of)
        where = f"the {len(samples)} good images this bundle held out at training, in {holdout_of}"
    else:
        assert good_images is not None
        samples, where = calibration_samples(good_images)
    # Refused before any image is read: a mistake costs a second, not a scoring run.
    overlap = check_not_trained_on(
        manifest, [s.path for s in samples], allow_training_images, where=good_images or holdout_of
    )
    good, names, skipped = _read([s.path for s in samples])
    if len(good) < MIN_GOOD:
        raise InputError(
            good_images or holdout_of,
            f"{len(good)} readable good image(s); calibration needs at least {MIN_GOOD} held-out good images",
        )
    console.print(f"calibrating on {len(good)} good images: {escape(where)}", soft_wrap=True, highlight=False)
    if overlap:
        console.print(f"[yellow]warning: {escape(overlap.describe())}[/yellow]", soft_wrap=True)
    if review_rate is not None and review_rate > REVIEW_RATE_WARN:
        console.print(
            f"[yellow]warning: --review-rate {review_rate:g} sends {review_rate:.0%} of good parts to "
            "review; it is a share of good parts (e.g. 0.02), not a confidence[/yellow]",
            soft_wrap=True,
        )
    bad: list[Any] = []
    if defects:
        from flawscope.data.datasets import read_image_folder

        loaded = read_image_folder(defects)
        bad = list(loaded.images)
        skipped += list(loaded.skipped)
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
            allow_training_images=allow_training_images,
        )
    print_calibration(result)
    _print_signer(bundle, result.thresholds.version)


def _by_hand(bundle: Path, reject: float, review: float | None) -> None:
    """Thresholds set by a person: a new version, signed like a calibrated one."""
    from flawscope.decide.workflow import set_thresholds_by_hand

    check_writable(bundle, "new thresholds (the bundle's manifest)")
    stored = set_thresholds_by_hand(bundle, reject, review)
    band = f", review {stored.review:.6g}" if stored.has_review_band else ""
    console.print(
        f"threshold version {stored.version}: reject {stored.reject:.6g}{band}, set by hand (no "
        "false-reject rate calibrated)"
    )
    _print_signer(bundle, stored.version)


def _print_signer(bundle: Path, version: int) -> None:
    """Which key signed the bundle with its new threshold version (nothing when it is unsigned)."""
    from flawscope.bundle import read_bundle

    signature = read_bundle(bundle).manifest.signature
    if signature is not None:
        console.print(f"threshold version {version} signed by key {signature.key_id}")


def _read(paths: list[str]) -> tuple[list[Any], list[str], list[tuple[str, str]]]:
    """Read images, skipping unusable files: ``(images, paths, skipped)``."""
    from flawscope.data.datasets import read_samples
    from flawscope.types import Sample

    loaded = read_samples([Sample(p, 0, "good", None) for p in paths], masks=False)
    return list(loaded.images), [s.path for s in loaded.samples], list(loaded.skipped)

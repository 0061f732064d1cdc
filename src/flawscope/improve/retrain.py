"""``flawscope retrain``: a candidate model from the base model's training set plus reviewed feedback.

The base bundle's manifest names its training set (``training.dataset``) and its hold-out rule;
the candidate is fitted on that set's good images plus the feedback's good images, held out the
same way for calibration, calibrated for the base thresholds' target false-reject rate (reporting
recall on the feedback's defective images it was not fitted on: all of them for an anomaly model,
only those of classes too rare to learn for one that learns from labels), exported, and given a
lineage section in its manifest:
which data, which reviews, which base model, what was left out and why.

The preprocessing stays the base model's (same canvas and resize mode), so that the candidate can
be compared with it part by part in shadow (:mod:`flawscope.improve.shadow`).

An anomaly model (PaDiM, PatchCore) learns from good parts only: the feedback's defective images
cannot be fitted on; they measure the candidate's recall at calibration and in ``model compare``.
A defect type the base model never saw is named as new, and what was done with it is written into
the lineage.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from flawscope.bundle import Bundle, read_bundle, update_manifest
from flawscope.data.datasets import Dataset, load_dataset, read_samples
from flawscope.decide.calibration import MIN_GOOD, CalibrationResult
from flawscope.decide.thresholds import utc_now_iso
from flawscope.errors import InputError
from flawscope.improve.feedback import FeedbackImage, FeedbackSet, read_feedback
from flawscope.manifest import DataSource, LineageSection
from flawscope.types import Sample

logger = logging.getLogger(__name__)
DEFAULT_HOLDOUT = 0.2


@dataclass(frozen=True)
class RetrainResult:
    """What retraining produced.

    Attributes:
        trained: the candidate's trained bundle.
        deployed: its deployable (exported) bundle.
        lineage: where it comes from.
        calibration: its calibration on the held-out good images.
        feedback: the feedback set as read (with its exclusions).
        known_classes: the defect types the base model knew.
    """

    trained: Path
    deployed: Path
    lineage: LineageSection
    calibration: CalibrationResult
    feedback: FeedbackSet
    known_classes: tuple[str, ...]


def known_classes(base: Bundle, original: Dataset | None) -> tuple[str, ...]:
    """The defect types a base model knows: its declared classes, else its training set's test types."""
    declared = getattr(base.manifest.model.declaration, "classes", None) or ()
    named = tuple(c for c in declared if c != "good")
    if named:
        return named
    return tuple(original.defect_types) if original is not None else ()


def _original(base: Bundle, data: str | os.PathLike[str] | None, labelled: bool = False) -> Dataset:
    given = data or base.manifest.training.dataset
    if not given:
        raise InputError(
            "--data", f"{base.path}: its manifest does not name a training set; give it with --data"
        )
    root = Path(given)
    if labelled and root.is_file() and root.suffix.lower() == ".csv":
        # A labelled base set given as a CSV: read through flawscope.data.labelled.
        return Dataset(name=root.stem, root=str(root), layout="csv", train=(), test=())
    if not root.is_dir():
        where = "--data" if data else f"{base.path}: training.dataset"
        raise InputError(
            where, f"the base model's training set {root} is not here; give its location with --data"
        )
    return load_dataset(root)


def without_training_images(feedback: FeedbackSet, original: Dataset) -> FeedbackSet:
    """The feedback without images that are already in the base training set (named in ``excluded``)."""
    from flawscope.data.imageio import sha256_file

    known = {sha256_file(s.path): s.path for s in original.train}
    same = {i.path: known[i.sha256] for i in feedback.images if i.sha256 in known}
    if not same:
        return feedback
    excluded = dict(feedback.excluded)
    excluded.update(
        {path: f"the same image is in the base training set ({was})" for path, was in same.items()}
    )
    kept = tuple(i for i in feedback.images if i.path not in same)
    if not kept:
        raise InputError(feedback.root, "every feedback image is already in the base training set")
    return replace(feedback, images=kept, excluded=excluded)


def _samples(images: Sequence[Any], label: int) -> tuple[Sample, ...]:
    return tuple(
        Sample(path=i.path, label=label, defect_type="good" if label == 0 else i.label) for i in images
    )


def retrain(
    bundle: str | os.PathLike[str],
    feedback: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    target_frr: float | None = None,
    review_rate: float | None = None,
    task: str | None = None,
    params: dict[str, Any] | None = None,
    base_defects: bool = True,
    band_rule: str = "shared",
) -> RetrainResult:
    """Retrain a candidate from a base bundle's training set and a feedback dataset.

    Args:
        bundle: the base (live) bundle, trained or deployable.
        feedback: the feedback dataset folder (``flawscope feedback export``).
        output: folder for the candidate (``trained/`` and ``deployed/`` inside); must not exist
            or be empty.
        data: the base model's training set, when it is not where its manifest says.
        target_frr: the calibration target (default: the base thresholds').
        review_rate: the review band's share of good parts (default: the base thresholds').
        task: ``classify``, ``segment`` or ``mixed``: the candidate learns from the feedback's
            labelled defects (:mod:`flawscope.improve.labelled`); ``None``: the base model's own
            kind (a good-parts model learns from good parts only).
        params: hyperparameters of the candidate beyond the base model's preprocessing (e.g.
            ``{"anomaly": "padim"}`` for a station, ``{"epochs": 30}``).
        base_defects: with ``task``, also fit on the labelled defects of the base set's test
            split (the old types' examples), so that the candidate keeps knowing them.
        band_rule: how a station's heads share the review band (``shared`` or ``anomaly``,
            :func:`flawscope.decide.workflow.calibrate_bundle`).

    Raises:
        InputError: a missing training set or feedback folder, an output folder in use, or a
            feedback set without usable images.
        BundleError: an altered base bundle.
    """
    from flawscope.decide.workflow import calibrate_bundle
    from flawscope.export.onnx_export import export_bundle

    base = read_bundle(bundle)
    out = Path(output).expanduser().absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(out, "the candidate's folder already exists and is not empty")
    manifest = base.manifest
    base_task = base_task_of(manifest)
    if task is None and base_task != "anomaly":
        task = base_task  # a model that learnt from labelled defects goes on learning from them
    if task is not None:
        from flawscope.improve.labelled import check_task

        check_task(task)  # before any file is read
    feedback_set = read_feedback(feedback)
    original = _original(base, data, labelled=task is not None)
    feedback_set = without_training_images(feedback_set, original)
    known = known_classes(base, original)
    new = feedback_set.new_classes(known)
    active = manifest.select_thresholds()
    target = (
        target_frr
        if target_frr is not None
        else (active.target_frr if active and active.target_frr else 0.01)
    )
    band = review_rate if review_rate is not None else (active.review_rate if active else None)
    holdout = manifest.training.holdout.fraction or DEFAULT_HOLDOUT
    notes: list[str] = []
    if feedback_set.conflicts:
        notes.append(
            f"{len(feedback_set.conflicts)} image(s) with conflicting labels left out until resolved"
        )
    if feedback_set.duplicates:
        notes.append(
            f"{len(feedback_set.duplicates)} feedback image(s) with the same content as another "
            "(reviewed more than once) counted once"
        )
    out.mkdir(parents=True, exist_ok=True)
    if task is None:
        fitted = _fit_anomaly(base, original, feedback_set, known, new, holdout, params, out / "trained")
    else:
        fitted = _fit_labelled(
            base, original, feedback_set, new, task, holdout, params, out / "trained", base_defects
        )
    notes = [*fitted.notes, *notes]
    for note in notes:
        logger.info("retrain: %s", note)
    defect_images = read_samples(_samples(fitted.unseen_defects, 1), masks=False).images
    calibration = calibrate_bundle(
        out / "trained",
        fitted.holdout_images,
        target_frr=target,
        defect_images=list(defect_images),
        review_rate=band,
        names=fitted.holdout_paths,
        band_rule=band_rule,
    )
    lineage = LineageSection(
        base_model_hash=base.model_hash,
        base_version=manifest.version_label(),
        data=fitted.data,
        reviews=feedback_set.review_seqs,
        excluded=MappingProxyType({**feedback_set.excluded, **fitted.left_out}),
        new_classes=new,
        notes=tuple(notes),
        created_at=utc_now_iso(),
    )
    update_manifest(read_bundle(out / "trained"), lineage=lineage)
    deployed = export_bundle(out / "trained", out / "deployed")
    if deployed.manifest.lineage is None:
        update_manifest(deployed, lineage=lineage)
    return RetrainResult(out / "trained", out / "deployed", lineage, calibration, feedback_set, known)


@dataclass(frozen=True)
class _Fitted:
    """A fitted (not yet calibrated) candidate: its hold-out, data sources, notes and left-out files.

    ``unseen_defects``: the feedback's defective images the candidate was not fitted on, the only
    ones whose recall at calibration is evidence.
    """

    holdout_images: list[Any]
    holdout_paths: list[str]
    data: tuple[DataSource, ...]
    notes: list[str]
    left_out: dict[str, str]
    unseen_defects: tuple[FeedbackImage, ...]


def base_task_of(manifest: Any) -> str:
    """The task a bundle's model was trained for (``"anomaly"`` for good-parts models)."""
    declared = getattr(manifest.model.declaration, "task", None)
    return str(getattr(manifest.training, "task", None) or declared or "anomaly")


def _fit_anomaly(
    base: Bundle,
    original: Dataset,
    feedback_set: FeedbackSet,
    known: tuple[str, ...],
    new: tuple[str, ...],
    holdout: float,
    extra: dict[str, Any] | None,
    output: Path,
) -> _Fitted:
    """The base model's own kind, on the base set's good images plus the feedback's good images."""
    from flawscope.models.train import file_list_hash, train

    manifest = base.manifest
    params = dict(manifest.model.hyperparameters)
    pre = manifest.preprocessing
    params.update(canvas=(pre.height, pre.width), resize_mode=pre.mode)  # the base model's preprocessing
    params.update(extra or {})
    combined = Dataset(
        name=f"{original.name}+feedback",
        root=original.root,
        layout=original.layout,
        train=(*original.train, *_samples(feedback_set.good, 0)),
        test=(*original.test, *_samples(feedback_set.defects, 1)),
    )
    notes = [
        f"fitted on {len(original.train)} good images of {original.root} and {len(feedback_set.good)} "
        f"reviewed good images of {feedback_set.root}, {holdout:g} of them held out for calibration"
    ]
    if feedback_set.defects:
        notes.append(
            f"{manifest.model.name} learns from good parts only: the {len(feedback_set.defects)} "
            f"reviewed defective images ({', '.join(feedback_set.classes)}) are not fitted on; they "
            "measure recall at calibration and in 'flawscope model compare' (retrain with --task "
            "mixed or classify to learn from them)"
        )
    if new:
        notes.append(
            f"new defect type(s) {', '.join(new)} (the base model knew "
            f"{', '.join(known) or 'none by name'}): an anomaly model names no type and flags any "
            "departure from good parts; their recall is reported per type"
        )
    result = train(combined, output, model=manifest.model.name, holdout=holdout, params=params)
    feedback_files = _samples(feedback_set.images, 0)
    data = (
        DataSource(
            role="original",
            path=original.root,
            n_images=len(original.train),
            file_list_sha256=file_list_hash(original.train, original.root),
            labels=MappingProxyType({"good": len(original.train)}),
        ),
        DataSource(
            role="feedback",
            path=feedback_set.root,
            n_images=len(feedback_set.images),
            file_list_sha256=file_list_hash(feedback_files, feedback_set.root),
            labels=MappingProxyType(feedback_set.counts()),
        ),
    )
    return _Fitted(
        list(result.holdout_images), list(result.holdout_paths), data, notes, {}, feedback_set.defects
    )


def _fit_labelled(
    base: Bundle,
    original: Dataset,
    feedback_set: FeedbackSet,
    new: tuple[str, ...],
    task: str,
    holdout: float,
    extra: dict[str, Any] | None,
    output: Path,
    base_defects: bool = True,
) -> _Fitted:
    """A model that learns from the feedback's labelled defects (:mod:`flawscope.improve.labelled`)."""
    from flawscope.improve.labelled import (
        candidate_params,
        check_task,
        label_counts,
        labelled_for_retraining,
    )
    from flawscope.models.train import file_list_hash
    from flawscope.models.train_supervised import train_supervised

    manifest = base.manifest
    kind = check_task(task)
    labels = manifest.training.labels or {}
    group_pattern = labels.get("group_pattern") if isinstance(labels, dict) else None
    made = labelled_for_retraining(
        original.root, feedback_set, kind, group_pattern=group_pattern, base_defects=base_defects
    )
    params = candidate_params(manifest, kind, base_task_of(manifest), extra)
    notes = [
        f"a {kind} model learning from labelled defects (the base was {manifest.model.name}, "
        f"{base_task_of(manifest)}), with the base model's preprocessing: fitted on "
        f"{len(made.original)} images of {original.root} ({_counts(label_counts(made.original))}) and "
        f"{len(made.feedback)} reviewed images of {feedback_set.root} "
        f"({_counts(label_counts(made.feedback))}); good images held out for calibration as below",
        *made.notes,
    ]
    if new:
        learnt = sorted({s.cls for s in made.feedback} & set(new))
        notes.append(
            f"new defect type(s) {', '.join(new)}: "
            + (f"learnt from the reviews ({', '.join(learnt)})" if learnt else "none learnt yet")
        )
    held = base_holdout(manifest, made.original)
    if held:
        notes.append(
            f"calibrated on the base model's own {len(held)} calibration images (by content), so "
            "that both models' thresholds stop the same good parts and every other good image the "
            "base model was fitted on is fitted on again"
        )
    else:
        notes.append(
            f"the base model's calibration images are not in the base set (or fewer than {MIN_GOOD}): "
            f"{holdout:g} of the good images held out instead"
        )
    result = train_supervised(made.labelled, output, kind, holdout, params, holdout_hashes=held or None)
    notes += [n for n in result.notes if n not in notes]
    data = (
        DataSource(
            role="original",
            path=original.root,
            n_images=len(made.original),
            file_list_sha256=file_list_hash(made.original, original.root),  # type: ignore[arg-type]
            labels=MappingProxyType(label_counts(made.original)),
        ),
        DataSource(
            role="feedback",
            path=feedback_set.root,
            n_images=len(made.feedback),
            file_list_sha256=file_list_hash(made.feedback, feedback_set.root),  # type: ignore[arg-type]
            labels=MappingProxyType(label_counts(made.feedback)),
        ),
    )
    unseen = tuple(i for i in feedback_set.defects if i.path in made.unfitted_defects)
    if len(unseen) < len(feedback_set.defects):
        # A head fitted on a defect image catches it: recall on those would be no evidence.
        notes.append(
            f"recall at calibration counts the {len(unseen)} reviewed defective images the candidate "
            f"was not fitted on, not the {len(feedback_set.defects) - len(unseen)} it was; judge it "
            "with 'flawscope model compare' on other parts"
        )
    return _Fitted(
        list(result.holdout_images), list(result.holdout_paths), data, notes, made.left_out, unseen
    )


def base_holdout(manifest: Any, samples: Sequence[Any]) -> frozenset[str]:
    """Contents of the base model's calibration images that are among ``samples`` (empty: too few).

    A candidate held out on another draw would be calibrated on other good parts than the live
    model and, worse, fitted on fewer of the good parts the live model learnt from (found on
    magnetic_tile: the station's PaDiM head, fitted on 401 good images against the live model's
    457, missed old defect types the live model caught).
    """
    from flawscope.data.imageio import sha256_file

    files = manifest.training.holdout.files
    wanted = {f.sha256 for f in files if f.sha256}
    present = {sha256_file(s.path) for s in samples if getattr(s, "cls", None) == "good"} & wanted
    return frozenset(present) if len(present) >= MIN_GOOD else frozenset()


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())

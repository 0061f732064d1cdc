"""Retraining a model that learns from labelled defects: the base training set plus the reviewed feedback.

:func:`flawscope.improve.retrain.retrain` comes here when the candidate is to learn from the
feedback's defects (``--task classify|segment|mixed``, or a base model that already did). The
labelled set is the base training set's training side, the labelled defects of its ``test``
split (the old types' examples the plant owns; ``base_defects=False`` leaves them to evaluation;
its test good images are never fitted on) and every reviewed image of the feedback dataset, under
its reviewed label, with its drawn mask where the reviewer drew one. What the set needed is
written down, never silently done:

* an image reviewed several times (same SHA-256, same label) is learnt once
  (:func:`~flawscope.improve.feedback.read_feedback`); a reviewed image that is also in the base
  training set keeps the base set's label;
* a defect class with fewer images than a model needs to learn it
  (:data:`~flawscope.data.labelled.MIN_PER_CLASS`): a good/defect model (``mixed``) learns all
  defect types as one class, a model that names categories leaves it out of training until more
  reviews come in (its parts still count in recall in ``model compare``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from flawscope.data.imageio import sha256_file
from flawscope.data.labelled import MIN_PER_CLASS, LabelledSample, LabelledSet, load_labelled
from flawscope.declaration import GOOD, Task
from flawscope.errors import InputError
from flawscope.improve.feedback import FeedbackSet
from flawscope.models.base import ModelConfig

logger = logging.getLogger(__name__)
TASKS = ("classify", "segment", "mixed")
# A candidate is judged against the live model on a few hundred parts, so its own run-to-run
# variation is noise in the gates: three heads of consecutive seeds averaged inside the head, each
# early-stopped on its validation loss averaged over 3 epochs (flawscope.models.ensemble). Chosen
# before any comparison was run with them; measured on the retraining's validation images
# (benchmarks/head_variance.py). A base model's own larger values, or the caller's, win.
RETRAIN_DEFAULTS: dict[str, int] = {"ensemble": 3, "smooth": 3}


@dataclass(frozen=True)
class LabelledRetrainSet:
    """The labelled set a supervised candidate is fitted on, and what was decided to make it.

    Attributes:
        labelled: the samples (the base set's training side, then the feedback's images).
        original: the base set's samples used.
        feedback: the feedback's samples used (after duplicates and rare classes).
        notes: what was decided, for the user and the lineage.
        left_out: image path -> why it is not fitted on.
        unfitted_defects: paths of the feedback's defective images that are fitted on neither
            as feedback nor as a base image (a class too rare to learn): evidence of recall.
    """

    labelled: LabelledSet
    original: tuple[LabelledSample, ...]
    feedback: tuple[LabelledSample, ...]
    notes: tuple[str, ...]
    left_out: dict[str, str]
    unfitted_defects: frozenset[str] = frozenset()


def check_task(task: str) -> Task:
    """The retraining task, or a one-line error naming the choices.

    Raises:
        InputError: naming ``--task``.
    """
    if task not in TASKS:
        raise InputError(
            "--task",
            f"retraining learns from labelled defects with one of {', '.join(TASKS)}, got {task!r} "
            "(leave --task out to retrain the base model's own kind)",
        )
    return Task(task)


def candidate_params(
    manifest: Any, task: Task, base_task: str, extra: dict[str, Any] | None
) -> dict[str, Any]:
    """Hyperparameters of the candidate: the base model's preprocessing, so that both see the same input.

    A base model of the same task passes on all of its hyperparameters; an anomaly base passes on
    what the shared trunk needs (backbone, canvas, resize mode, pooling, seed). The trained head
    is an ensemble of at least :data:`RETRAIN_DEFAULTS` unless ``extra`` says otherwise.
    """
    from flawscope.models.registry import MODELS

    base = dict(manifest.model.hyperparameters)
    if manifest.model.name in MODELS:  # a bundle from before a newer default keeps its old value
        base = MODELS[manifest.model.name].saved_params(base)
    if base_task == str(task):
        params = base
    else:
        params = {k: v for k, v in base.items() if k in ModelConfig.__dataclass_fields__}
    pre = manifest.preprocessing
    params.update(canvas=(pre.height, pre.width), resize_mode=pre.mode)
    for name, least in RETRAIN_DEFAULTS.items():
        params[name] = max(int(params.get(name) or 1), least)
    params.update(extra or {})
    return params


def _original_samples(
    root: str, group_pattern: str | None, base_defects: bool
) -> tuple[tuple[LabelledSample, ...], int]:
    """The base set's training side and (``base_defects``) its test split's labelled defects."""
    loaded = load_labelled(root, group_pattern)
    kept = [s for s in loaded.samples if s.split != "test"]
    # Its labelled defects are the plant's knowledge of the old types: a candidate that learns the
    # new type from reviews alone forgets the old ones (magnetic_tile: 85% -> 19% recall). Its
    # test good images stay out: nothing about good parts is missing from the training side.
    extra = [s for s in loaded.samples if s.split == "test" and s.cls != GOOD] if base_defects else []
    return tuple(replace(s, split=None) for s in (*kept, *extra)), len(extra)


def labelled_for_retraining(
    original_root: str,
    feedback: FeedbackSet,
    task: Task,
    *,
    group_pattern: str | None = None,
    min_per_class: int = MIN_PER_CLASS,
    base_defects: bool = True,
) -> LabelledRetrainSet:
    """The base training set's training side plus the feedback's reviewed images (see the module docstring).

    Args:
        original_root: the base model's training set.
        feedback: the reviewed feedback.
        task: what the candidate learns.
        group_pattern: regular expression of the groups (as the base model was trained).
        min_per_class: images a defect class needs to be learnt as a class.
        base_defects: also fit on the labelled defects of the base set's test split.

    Raises:
        InputError: when no defect class is left to learn from (naming the feedback folder).
    """
    original, n_test_defects = _original_samples(original_root, group_pattern, base_defects)
    notes: list[str] = []
    if n_test_defects:
        notes.append(
            f"the base set's {n_test_defects} labelled defect images of its test split are fitted on "
            "(the old types' examples); judge the candidate on other parts"
        )
    left_out: dict[str, str] = {}
    known = {sha256_file(s.path): s.path for s in original}
    chosen: list[LabelledSample] = []
    for image in feedback.images:  # each content once already (read_feedback)
        if image.sha256 in known:
            left_out[image.path] = f"the same image is in the base training set ({known[image.sha256]})"
            continue
        label = GOOD if image.is_good else image.label
        chosen.append(LabelledSample(image.path, label, mask_path=image.mask if not image.is_good else None))
    counts = Counter(s.cls for s in (*original, *chosen))
    unfitted: frozenset[str] = frozenset()
    rare = sorted(c for c, n in counts.items() if c != GOOD and n < min_per_class)
    if rare and task is Task.MIXED:
        notes.append(
            f"defect class(es) {', '.join(f'{c} ({counts[c]})' for c in rare)} have fewer than "
            f"{min_per_class} images: the good/defect model learns every defect type as one class"
        )
        # The mixed model tells good from defect only: one shared label loses nothing and keeps rare types.
        chosen = [replace(s, cls="defect") if s.cls != GOOD else s for s in chosen]
        original = tuple(replace(s, cls="defect") if s.cls != GOOD else s for s in original)
        merged = Counter(s.cls for s in (*original, *chosen))
        rare = [c for c in ("defect",) if 0 < merged.get(c, 0) < min_per_class]
    if rare:
        notes.append(
            f"defect class(es) {', '.join(f'{c} ({counts.get(c, 0)})' for c in rare)} have fewer than "
            f"{min_per_class} reviewed images: not learnt yet (keep reviewing); their parts still "
            "count in 'flawscope model compare'"
        )
        for s in (*original, *chosen):
            if s.cls in rare:
                left_out[s.path] = f"class {s.cls!r} has fewer than {min_per_class} images"
        unfitted = frozenset(s.path for s in chosen if s.cls in rare)
        chosen = [s for s in chosen if s.cls not in rare]
        original = tuple(s for s in original if s.cls not in rare)
    samples = (*original, *chosen)
    if not any(s.cls != GOOD for s in samples) and task is not Task.MIXED:
        raise InputError(
            feedback.root,
            f"no labelled defect to learn from (a {task} model needs reviewed defects of at least one "
            f"class with {min_per_class} images)",
        )
    labelled = LabelledSet(
        name=f"{Path(original_root).name}+feedback",
        root=str(Path(original_root).absolute()),
        layout="retrain",
        samples=tuple(sorted(samples, key=lambda s: s.path)),
    )
    for note in notes:
        logger.info("retrain: %s", note)
    return LabelledRetrainSet(labelled, original, tuple(chosen), tuple(notes), left_out, unfitted)


def label_counts(samples: Sequence[LabelledSample]) -> dict[str, int]:
    """Images per class, sorted by class."""
    return dict(sorted(Counter(s.cls for s in samples).items()))

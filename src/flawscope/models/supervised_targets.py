"""What a supervised model learns from, per image: classes, soft targets, pixel targets, pasted defects.

Pure functions of the labels (:class:`~flawscope.types.Targets`) and of what the model class
declares it learns (a segmenting model's pixel classes, boxes read as masks, good / defect only);
:class:`~flawscope.models.supervised.SupervisedModel` calls them before its features are cut.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flawscope.data.augment import paste_defects
from flawscope.declaration import GOOD
from flawscope.errors import InputError
from flawscope.models.boxes import box_class_map
from flawscope.types import Targets

DEFECT = "defect"


def classes_for(targets: Targets, from_boxes: bool, binary: bool) -> tuple[str, ...]:
    """The model's classes: good first, then the defect classes of the labels (and boxes) sorted."""
    found = set(targets.classes)
    if from_boxes:
        found |= {b[4] for boxes in targets.boxes for b in boxes}
    if binary:
        return (GOOD, DEFECT)
    return tuple(sorted(found, key=lambda c: (c != GOOD, c)))


def soft_targets(targets: Targets, classes: Sequence[str]) -> np.ndarray:
    """``(N, 2)`` float32 targets ``[1 - p, p]`` from each image's labelled defect probability ``p``.

    What ``soft_labels`` trains the image loss on instead of the hard class (ELPV: the
    annotators' 0, 1/3, 2/3, 1 instead of the cut at 0.5).

    Args:
        targets: the labels; ``targets.probabilities`` must hold every image's probability.
        classes: the model's classes: good and one defect class, in that order.

    Raises:
        InputError: naming ``soft_labels`` when the labels carry no probabilities or the model
            has other than two classes, and ``probability`` (with the image) when a value is
            not in [0, 1] or contradicts the image's class (a good image above 0.5, a defective
            one below).
    """
    if not targets.probabilities:
        raise InputError(
            "soft_labels",
            "needs every image's labelled defect probability (a 'probability' column of the "
            "labels CSV, or Targets.probabilities); these labels carry none",
        )
    if len(classes) != 2 or classes[0] != GOOD:
        raise InputError(
            "soft_labels", f"needs good and one defect class (a defect probability), got {list(classes)}"
        )
    p = np.asarray(targets.probabilities, np.float64)
    bad = np.flatnonzero(~np.isfinite(p) | (p < 0.0) | (p > 1.0))
    if len(bad):
        i = int(bad[0])
        raise InputError("probability", f"image {i}: must be in [0, 1], got {targets.probabilities[i]!r}")
    is_good = np.array([c == GOOD for c in targets.classes])
    wrong = np.flatnonzero((is_good & (p > 0.5)) | (~is_good & (p < 0.5)))
    if len(wrong):
        i = int(wrong[0])
        raise InputError(
            "probability",
            f"image {i} is labelled {targets.classes[i]!r} but its defect probability is {p[i]:g} "
            f"({len(wrong)} such images)",
        )
    return np.stack([1.0 - p, p], axis=1).astype(np.float32)


def pixel_targets(
    images: Sequence[np.ndarray],
    targets: Targets,
    classes: Sequence[str],
    *,
    segments: bool,
    from_boxes: bool,
    binary: bool,
) -> tuple[list[np.ndarray | None], list[int]]:
    """Per image: its mask (bool) or class map (boxes), and the segmentation class of a bool mask."""
    masks: list[np.ndarray | None] = []
    seg: list[int] = []
    defect_classes = [c for c in classes if c != GOOD]
    for i, (image, cls) in enumerate(zip(images, targets.classes, strict=True)):
        k = 0 if cls == GOOD or not segments else 1 + defect_classes.index(DEFECT if binary else cls)
        seg.append(k)
        if cls == GOOD:
            masks.append(np.zeros(image.shape[:2], bool))
        elif from_boxes and targets.boxes and targets.boxes[i]:
            # Index k of a box's class in [background, *defect classes] is its segmentation class.
            masks.append(box_class_map(image.shape[:2], targets.boxes[i], [GOOD, *defect_classes]))
        elif targets.masks and targets.masks[i] is not None:
            masks.append(np.asarray(targets.masks[i], bool))
        else:
            masks.append(None)
    return masks, seg


def with_pasted(
    images: Sequence[np.ndarray], targets: Targets, train_idx: list[int], below: int, seed: int
) -> tuple[list[np.ndarray], Targets, list[int], list[str] | None]:
    """Synthetic pasted defects for classes rarer than ``below`` (training side only).

    Returns:
        The images, targets and training indices with the pasted images appended, and what was
        pasted (``None`` when nothing could be: ``below`` is 0 or there are no masks).
    """
    images = list(images)
    if below <= 0 or not targets.masks:
        return images, targets, train_idx, None
    rng = np.random.default_rng(seed)
    classes, masks, probabilities = list(targets.classes), list(targets.masks), list(targets.probabilities)
    good = [images[i] for i in train_idx if classes[i] == GOOD]
    notes = []
    for cls in sorted({classes[i] for i in train_idx} - {GOOD}):
        mine = [i for i in train_idx if classes[i] == cls]
        donors = [(images[i], masks[i]) for i in mine if masks[i] is not None]
        missing = below - len(mine)
        if missing <= 0:
            continue
        made = paste_defects(good, donors, missing, rng)  # type: ignore[arg-type]
        for image, mask in made:
            train_idx.append(len(images))
            images.append(image)
            classes.append(cls)
            masks.append(mask)
            if targets.probabilities:
                probabilities.append(1.0)  # a pasted defect is certainly defective
        notes.append(f"{len(made)} synthetic {cls!r} images pasted onto good parts ({len(mine)} real)")
    groups = (
        (*targets.groups, *(f"synthetic-{i}" for i in range(len(images) - len(targets))))
        if targets.groups
        else ()
    )
    return images, Targets(tuple(classes), tuple(masks), (), groups, tuple(probabilities)), train_idx, notes

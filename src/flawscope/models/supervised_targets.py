"""What a supervised model learns from, per image: classes, pixel targets and pasted rare defects.

Pure functions of the labels (:class:`~flawscope.types.Targets`) and of what the model class
declares it learns (a segmenting model's pixel classes, boxes read as masks, good / defect only);
:class:`~flawscope.models.supervised.SupervisedModel` calls them before its features are cut.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flawscope.data.augment import paste_defects
from flawscope.declaration import GOOD
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
    classes, masks = list(targets.classes), list(targets.masks)
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
        notes.append(f"{len(made)} synthetic {cls!r} images pasted onto good parts ({len(mine)} real)")
    groups = (
        (*targets.groups, *(f"synthetic-{i}" for i in range(len(images) - len(targets))))
        if targets.groups
        else ()
    )
    return images, Targets(tuple(classes), tuple(masks), (), groups), train_idx, notes

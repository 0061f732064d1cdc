"""Augmentation of labelled training images (albumentations), and synthetic defects for rare classes.

The pipeline is described by a plain, JSON-ready :class:`AugmentSpec` that is recorded in the
bundle's manifest, so a training run can be repeated. Augmented views are made once, before the
frozen backbone runs, and their features are cached with the clean view's
(:mod:`flawscope.features.cache`): training the heads never waits on the backbone.

Synthetic defects (:func:`paste_defects`) copy a masked defect of a rare class onto a good part
at a random place, feathered at its edge, so that a class with few examples gets more (with
masks, where the donor had one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from flawscope.errors import InputError

DEFAULT_TRANSFORMS: Mapping[str, Mapping[str, Any]] = {
    "HorizontalFlip": {"p": 0.5},
    "VerticalFlip": {"p": 0.5},
    "Affine": {"p": 0.5, "scale": [0.95, 1.05], "rotate": [-5, 5], "translate_percent": [-0.03, 0.03]},
    "RandomBrightnessContrast": {"p": 0.5, "brightness_limit": 0.1, "contrast_limit": 0.1},
    "GaussianBlur": {"p": 0.1, "blur_limit": [3, 5]},
    "GaussNoise": {"p": 0.1, "std_range": [0.01, 0.03]},
}


@dataclass(frozen=True)
class AugmentSpec:
    """What augmentation a training run uses (recorded in the manifest).

    Attributes:
        views: augmented views cached per training image, besides the clean one (0: none).
        transforms: albumentations transform name -> its keyword arguments.
        rare_below: classes with fewer training images than this get synthetic defects pasted
            onto good parts until they have this many (0: none); only from donors with masks.
        seed: seed of every random choice.
    """

    views: int = 1
    transforms: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: dict(DEFAULT_TRANSFORMS))
    rare_below: int = 0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the albumentations version."""
        import albumentations

        data = asdict(self)
        data["transforms"] = {k: dict(v) for k, v in self.transforms.items()}
        data["albumentations"] = albumentations.__version__
        return data

    def pipeline(self) -> Any:
        """The albumentations ``Compose`` (masks follow geometric transforms).

        Raises:
            InputError: naming a transform albumentations does not have or whose arguments it refuses.
        """
        import albumentations as A

        steps = []
        for name, kwargs in self.transforms.items():
            cls = getattr(A, name, None)
            if cls is None or not isinstance(cls, type):
                raise InputError(f"augment.{name}", "is not an albumentations transform")
            try:
                steps.append(cls(**dict(kwargs)))
            except (TypeError, ValueError) as exc:
                raise InputError(f"augment.{name}", f"arguments refused ({exc})") from None
        return A.Compose(steps, seed=self.seed)


def augmented_views(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None],
    spec: AugmentSpec,
) -> tuple[list[np.ndarray], list[np.ndarray | None], list[int]]:
    """``spec.views`` augmented copies of every image, with masks transformed alike.

    Returns:
        The augmented images, their masks (``None`` where the original had none) and, for each,
        the index of the image it came from.
    """
    if spec.views <= 0:
        return [], [], []
    pipeline = spec.pipeline()
    out_images: list[np.ndarray] = []
    out_masks: list[np.ndarray | None] = []
    source: list[int] = []
    for _ in range(spec.views):
        for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
            if mask is None:
                done = pipeline(image=image)
                out_masks.append(None)
            else:
                done = pipeline(image=image, mask=mask.astype(np.uint8))
                out_masks.append(done["mask"].astype(bool))
            out_images.append(np.ascontiguousarray(done["image"]))
            source.append(i)
    return out_images, out_masks, source


def paste_defects(
    good: Sequence[np.ndarray],
    donors: Sequence[tuple[np.ndarray, np.ndarray]],
    count: int,
    rng: np.random.Generator,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Synthetic defective parts: a donor's masked defect pasted onto a good part.

    The defect's pixels (its mask's bounding box, blended through the mask blurred at the edge)
    go to a random place of a random good image of the same pixel type; a donor larger than the
    good image is scaled down to fit.

    Args:
        good: good images.
        donors: ``(image, mask)`` of defective images of the rare class.
        count: how many synthetic images to make.
        rng: random generator.

    Returns:
        ``(image, mask)`` pairs.
    """
    made: list[tuple[np.ndarray, np.ndarray]] = []
    usable = [(im, m) for im, m in donors if m is not None and m.any()]
    if not usable or not good or count <= 0:
        return made
    for _ in range(count):
        image, mask = usable[int(rng.integers(len(usable)))]
        target = np.array(good[int(rng.integers(len(good)))], copy=True)
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        patch = image[y0:y1, x0:x1]
        alpha = cv2.GaussianBlur(mask[y0:y1, x0:x1].astype(np.float32), (0, 0), 1.5)
        th, tw = target.shape[:2]
        scale = min(1.0, 0.9 * th / patch.shape[0], 0.9 * tw / patch.shape[1])
        if scale < 1.0:
            size = (max(1, int(patch.shape[1] * scale)), max(1, int(patch.shape[0] * scale)))
            patch, alpha = cv2.resize(patch, size), cv2.resize(alpha, size)
        ph, pw = alpha.shape
        top, left = int(rng.integers(0, th - ph + 1)), int(rng.integers(0, tw - pw + 1))
        if patch.ndim != target.ndim:
            patch = patch if patch.ndim == 2 else patch.mean(axis=2).astype(patch.dtype)
            if target.ndim == 3:
                patch = np.repeat(patch[:, :, None], 3, axis=2)
        a = alpha if target.ndim == 2 else alpha[:, :, None]
        region = target[top : top + ph, left : left + pw].astype(np.float32)
        blended = region * (1.0 - a) + patch.astype(np.float32) * a
        target[top : top + ph, left : left + pw] = np.clip(blended, 0, np.iinfo(target.dtype).max).astype(
            target.dtype
        )
        new_mask = np.zeros((th, tw), bool)
        new_mask[top : top + ph, left : left + pw] = alpha > 0.5
        made.append((target, new_mask))
    return made

"""Frozen-trunk features of labelled images, computed once and reused by every head and fold.

Training heads on cached features is what makes a supervised training run take minutes on a
two-core CPU: the backbone runs once per image (and per augmented view), through ONNX Runtime,
and the heads train on the stored ``float16`` maps. A :class:`FeatureBank` also holds, per cell of
the stride-8 grid, the training target cut from the image's mask (or boxes).

Banks can be kept on disk (safetensors, no pickle) under a key made of everything that changes
them: the images' content hashes, the preprocessing, the backbone's weights hash, the pooling,
the augmentation; cross-validation then extracts features once per dataset, not once per fold.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from flawscope.data.augment import AugmentSpec, augmented_views
from flawscope.data.preprocess import Geometry, Preprocessing, canvas_valid_mask, to_batch
from flawscope.errors import InputError

log = logging.getLogger(__name__)
STRIDE = 8
# A cell is a defect cell when at least this share of it is masked, background at most LOW;
# cells in between (a defect's thin border) are left out of the segmentation loss.
POSITIVE = 0.2
LOW = 0.02
UNKNOWN = -1
Progress = Callable[[str, int, int], None]


@dataclass
class FeatureBank:
    """Cached features and per-cell targets of images and their augmented views.

    Attributes:
        features: ``(M, C, h, w)`` float16 embedder features.
        valid: ``(M, h, w)`` bool, cells whose centre lies inside the image (not padding).
        cells: ``(M, h, w)`` int16 cell targets: 0 background, ``k > 0`` segmentation class
            ``k``, :data:`UNKNOWN` where the image has no mask (or a cell on a defect's border).
        image: ``(M,)`` index of the source image.
        view: ``(M,)`` 0 for the image itself, ``v > 0`` for its v-th augmented view.
    """

    features: torch.Tensor
    valid: torch.Tensor
    cells: torch.Tensor
    image: np.ndarray
    view: np.ndarray

    def rows(self, images: Sequence[int] | np.ndarray, views: bool = True) -> np.ndarray:
        """Rows of the given images (and their augmented views when ``views``)."""
        chosen = np.isin(self.image, np.asarray(images, dtype=np.int64))
        if not views:
            chosen &= self.view == 0
        return np.flatnonzero(chosen)

    def check_channels(self, expected: int) -> None:
        """Refuse features of another width than the model's (e.g. a bank cached without ``fine_level``).

        Raises:
            InputError: naming ``fine_level``, the one hyperparameter that changes the width on a
                given backbone.
        """
        if self.features.shape[1] != expected:
            raise InputError(
                "fine_level",
                f"the feature bank has {self.features.shape[1]} channels, this model's features "
                f"{expected}: extract the bank with the model's own fine_level and backbone",
            )

    def save(self, path: Path, key: str) -> None:
        """Write the bank as safetensors (atomic)."""
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(".part")
        save_file(
            {
                "features": self.features.contiguous(),
                "valid": self.valid.to(torch.uint8).contiguous(),
                "cells": self.cells.contiguous(),
                "image": torch.from_numpy(self.image.astype(np.int64)),
                "view": torch.from_numpy(self.view.astype(np.int64)),
            },
            str(temp),
            metadata={"key": key},
        )
        os.replace(temp, path)

    @classmethod
    def load(cls, path: Path) -> FeatureBank:
        """Read a bank written by :meth:`save`."""
        from safetensors.torch import load_file

        t = load_file(str(path))
        return cls(t["features"], t["valid"].bool(), t["cells"], t["image"].numpy(), t["view"].numpy())


def cell_targets(
    mask: np.ndarray | None, seg_class: int, geometry: Geometry, pre: Preprocessing
) -> np.ndarray:
    """``(h, w)`` int16 cell targets of one image from its ``(H, W)`` mask (bool or class map).

    Args:
        mask: bool defect mask, an int class map (0 background), or ``None`` when unknown.
        seg_class: class given to the masked pixels of a bool mask (0: a good image).
        geometry: where the image lies in the canvas.
        pre: preprocessing.
    """
    gh, gw = pre.height // STRIDE, pre.width // STRIDE
    if mask is None:
        return np.full((gh, gw), UNKNOWN if seg_class else 0, np.int16)
    labels = mask.astype(np.int32) * seg_class if mask.dtype == bool else mask.astype(np.int32)
    out = np.zeros((gh, gw), np.int16)
    unknown = np.zeros((gh, gw), bool)
    for k in np.unique(labels):
        if k == 0:
            continue
        inner = cv2.resize((labels == k).astype(np.float32), (geometry.inner_width, geometry.inner_height),
                           interpolation=cv2.INTER_AREA)  # fmt: skip
        canvas = np.zeros((pre.height, pre.width), np.float32)
        canvas[geometry.top : geometry.top + geometry.inner_height,
               geometry.left : geometry.left + geometry.inner_width] = inner  # fmt: skip
        share = cv2.resize(canvas, (gw, gh), interpolation=cv2.INTER_AREA)
        out[share >= POSITIVE] = k
        unknown |= (share > LOW) & (share < POSITIVE)
    out[unknown & (out == 0)] = UNKNOWN
    return out


def bank_key(
    hashes: Sequence[str], pre: Preprocessing, backbone: str, weights: str | None, aggregate: int,
    augment: AugmentSpec | None, augment_rows: Sequence[int], targets: Sequence[str],
    fine_level: bool = False,
) -> str:  # fmt: skip
    """What identifies a bank: change any of it and the features or targets change."""
    payload: dict[str, object] = {
        "images": list(hashes),
        "targets": list(targets),
        "preprocessing": pre.to_dict(),
        "backbone": [backbone, weights],
        "aggregate": aggregate,
        "augment": None if augment is None else {**augment.to_dict(), "rows": list(augment_rows)},
        "format": 1,
    }
    if fine_level:  # absent when off: the banks cached before the option keep their keys
        payload["fine_level"] = True
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def extract_bank(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None],
    seg_classes: Sequence[int],
    pre: Preprocessing,
    runner: Callable[[np.ndarray], torch.Tensor],
    augment: AugmentSpec | None = None,
    augment_rows: Sequence[int] = (),
    progress: Progress | None = None,
    batch_size: int = 8,
) -> FeatureBank:
    """Run the frozen embedder over images (and augmented views of some) and cut cell targets.

    Args:
        images: the images.
        masks: per image a bool mask, an int class map, or ``None`` (unknown).
        seg_classes: per image the segmentation class of its masked pixels (0 for a good image).
        pre: preprocessing.
        runner: ``(B, 3, H, W)`` canvas batch to ``(B, C, H/8, W/8)`` features.
        augment: augmentation; ``augment.views`` views are made of each image in ``augment_rows``.
        augment_rows: which images get augmented views (the training images, never test ones).
        progress: callback ``(stage, done, total)``.
        batch_size: images per backbone call.
    """
    todo_images = list(images)
    todo_masks = list(masks)
    source = list(range(len(images)))
    views = [0] * len(images)
    if augment is not None and augment.views > 0 and len(augment_rows):
        rows = list(augment_rows)
        extra, extra_masks, origin = augmented_views(
            [images[i] for i in rows], [masks[i] for i in rows], augment
        )
        todo_images += extra
        todo_masks += extra_masks
        source += [rows[o] for o in origin]
        views += [1 + k // len(rows) for k in range(len(extra))]
    feats, valid, cells = [], [], []
    total = len(todo_images)
    for start in range(0, total, batch_size):
        chunk = todo_images[start : start + batch_size]
        batch, geometries = to_batch(chunk, pre)
        feats.append(runner(batch).to(torch.float16))
        valid.append(torch.from_numpy(canvas_valid_mask(geometries, pre, STRIDE)))
        for offset, geometry in enumerate(geometries):
            i = start + offset
            cells.append(torch.from_numpy(cell_targets(todo_masks[i], seg_classes[source[i]], geometry, pre)))
        if progress:
            progress("features", min(start + batch_size, total), total)
    return FeatureBank(
        torch.cat(feats),
        torch.cat(valid),
        torch.stack(cells),
        np.asarray(source, np.int64),
        np.asarray(views, np.int64),
    )


def cached_bank(
    cache_dir: str | os.PathLike[str] | None, key: str, build: Callable[[], FeatureBank]
) -> FeatureBank:
    """The bank stored under ``key`` in ``cache_dir``, or ``build()`` it (and store it there)."""
    if cache_dir is None:
        return build()
    path = Path(cache_dir) / f"{key[:32]}.safetensors"
    if path.is_file():
        try:
            log.info("feature bank from %s", path)
            return FeatureBank.load(path)
        except Exception as exc:  # a damaged cache file is rebuilt, never trusted
            log.warning("feature cache %s unreadable (%s); extracting again", path, exc)
    bank = build()
    try:
        bank.save(path, key)
    except OSError as exc:
        log.warning("feature cache %s not written (%s)", path, exc)
    return bank

"""Base of the good-parts-only models (PaDiM, PatchCore): one ``patch_scores`` output.

They learn from the embedder's features of good images alone; :meth:`AnomalyModel.fit_head`
re-learns that state on another extractor's features (the INT8 export's).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar

import numpy as np
import torch

from flawscope.data.imageio import ImageLike, is_path
from flawscope.data.preprocess import canvas_valid_mask, to_batch
from flawscope.data.tiling import layout, tile_batches
from flawscope.declaration import GOOD, LabelKind, ModelDeclaration, Task, anomaly_declaration
from flawscope.errors import InputError
from flawscope.features.embedder import STRIDE
from flawscope.models.base import Model, Progress
from flawscope.models.engine import make_runner
from flawscope.types import Targets


class AnomalyModel(Model):
    """Base of the good-parts-only models: one ``patch_scores`` output on the stride-8 grid."""

    task: ClassVar[Task] = Task.ANOMALY
    labels: ClassVar[tuple[LabelKind, ...]] = (LabelKind.GOOD_PARTS,)
    tiles: ClassVar[bool] = True

    @abstractmethod
    def _fit_features(
        self, batches: Iterator[tuple[torch.Tensor, np.ndarray]], n_images: int, progress: Progress | None
    ) -> None:
        """Learn from ``(features (B, C, h, w), valid (B, h, w) bool)`` batches of good images."""

    def declaration(self) -> ModelDeclaration:  # noqa: D102
        return anomaly_declaration(STRIDE)

    def fit(
        self, images: Sequence[ImageLike], targets: Targets | None = None, progress: Progress | None = None
    ) -> AnomalyModel:
        """Learn what good parts look like.

        Args:
            images: part images, ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` uint8/uint16 arrays of
                any sizes, or paths of image files (then kept in :attr:`training_files_`).
            targets: optional labels; only the images labelled ``"good"`` are learnt from.
            progress: optional callback ``(stage, done, total)``.

        Returns:
            ``self``.

        Raises:
            InputError: naming the file, for a path that cannot be read as an image.
        """
        if is_path(images) or isinstance(images, np.ndarray):
            raise InputError("images", "expected a list of images or file paths, got a single one")
        if targets is not None:
            if len(targets) != len(images):
                raise InputError("targets", f"{len(targets)} labels for {len(images)} images")
            images = [im for im, c in zip(images, targets.classes, strict=True) if c == GOOD]
        if len(images) == 0:
            raise ValueError("fit needs at least one good image")
        arrays = self._read_training_images(images)
        torch.manual_seed(self.config.seed)
        pre = self._make_preprocessing(arrays)
        self.preprocessing_ = pre
        extract = make_runner(self._embedder(), pre.height, pre.width, self.config.engine)
        self.runner_ = extract
        self._learn(arrays, extract, progress)
        return self

    def fit_head(
        self,
        images: Sequence[np.ndarray],
        extract: Callable[[np.ndarray], torch.Tensor],
        progress: Progress | None = None,
    ) -> AnomalyModel:
        """Re-learn the state (Gaussians, memory bank) on another extractor's features.

        The preprocessing stays as fitted. INT8 export uses this so that the head describes the
        features the quantised backbone really produces: 8-bit rounding moves every feature a
        little, and a head fitted on fp32 features reads that as anomaly (on magnetic_tile PaDiM
        lost 0.077 image AUROC without this, none with it).

        Args:
            images: good-part images, as for :meth:`fit`.
            extract: ``(B, 3, H, W)`` preprocessed canvas to ``(B, C, H/8, W/8)`` features.
            progress: optional callback ``(stage, done, total)``.

        Returns:
            ``self``; :meth:`predict` then runs on ``extract`` too.
        """
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() or load a bundle")
        if len(images) == 0:
            raise ValueError("fit_head needs at least one good image")
        torch.manual_seed(self.config.seed)
        self._learn(images, extract, progress)
        self.runner_ = extract
        return self

    def _learn(
        self,
        images: Sequence[np.ndarray],
        extract: Callable[[np.ndarray], torch.Tensor],
        progress: Progress | None,
    ) -> None:
        pre = self.preprocessing_
        assert pre is not None

        def tiles() -> Iterator[tuple[torch.Tensor, np.ndarray]]:
            size = self.config.batch_size
            for batch, where in tile_batches(images, pre, size):
                if progress:
                    progress("features", where[-1][0] + 1, len(images))
                yield extract(batch), np.ones((len(batch), pre.tile // STRIDE, pre.tile // STRIDE), bool)

        def batches() -> Iterator[tuple[torch.Tensor, np.ndarray]]:
            size = self.config.batch_size
            for start in range(0, len(images), size):
                batch, geometries = to_batch(images[start : start + size], pre)
                features = extract(batch)
                valid = canvas_valid_mask(geometries, pre, STRIDE)
                if progress:
                    progress("features", min(start + size, len(images)), len(images))
                yield features, valid

        if pre.tile:
            n_tiles = sum(len(layout(im.shape, pre).origins) for im in images)
            self._fit_features(tiles(), n_tiles, progress)
        else:
            self._fit_features(batches(), len(images), progress)

    def patch_scores(self, batch: np.ndarray) -> np.ndarray:
        """Run the scorer on a preprocessed ``(B, 3, H, W)`` batch; returns ``(B, H/8, W/8)``."""
        return self.raw_outputs(batch)["patch_scores"]

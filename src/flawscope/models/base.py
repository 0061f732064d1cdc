"""The one API every anomaly model follows, in the spirit of scikit-learn.

``__init__`` stores hyperparameters only; ``fit(images)`` learns from good parts and returns
``self``; ``predict(images)`` returns raw scores and anomaly maps (no thresholds: decisions live
in :mod:`flawscope.decide`). Learned state ends in ``_``.

Scoring is split so that the deployed runtime reproduces it exactly: the shared numpy
preprocessing (:mod:`flawscope.data.preprocess`) makes the input, a torch module
(:meth:`AnomalyModel.scorer`, also what is exported to ONNX) maps it to patch scores on the
stride-8 grid, and the shared numpy :func:`~flawscope.data.preprocess.finish_maps` smooths and
resizes them back to each image.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flawscope.data.preprocess import Preprocessing, canvas_valid_mask, choose_canvas, finish_maps, to_batch
from flawscope.errors import InputError
from flawscope.features.backbones import BACKBONES, load_backbone
from flawscope.models.engine import ENGINES, make_runner
from flawscope.types import Prediction

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]
STRIDE = 8


class Embedder(nn.Module):
    """Backbone plus multi-scale fusion: ``(B, 3, H, W)`` to ``(B, C8 + C16, H/8, W/8)``.

    The stride-16 map is upsampled to stride 8 and concatenated; a ``aggregate`` x ``aggregate``
    average pool then gives each cell its neighbourhood's context, as in PatchCore.
    """

    def __init__(self, backbone: nn.Module, aggregate: int):
        super().__init__()
        self.backbone = backbone
        self.aggregate = aggregate
        self.channels = int(sum(backbone.channels))  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        f8, f16 = self.backbone(x)
        f16 = F.interpolate(f16, size=f8.shape[-2:], mode="bilinear", align_corners=False)
        features = torch.cat([f8, f16], dim=1)
        if self.aggregate > 1:
            features = F.avg_pool2d(
                features, self.aggregate, stride=1, padding=self.aggregate // 2, count_include_pad=False
            )
        return features


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters common to every anomaly model.

    Attributes:
        backbone: feature extractor name.
        image_size: canvas size along its shorter side.
        canvas: fixed ``(height, width)``; ``None`` picks it from the training images.
        resize_mode: ``"fit_pad"`` (keep aspect) or ``"stretch"``.
        aggregate: neighbourhood pooling size on the stride-8 grid.
        batch_size: images per forward pass.
        seed: random seed for every random choice.
        engine: ``"auto"`` runs the frozen network through ONNX Runtime when it can (several
            times faster on a CPU), ``"torch"`` forces torch eager; results agree to float rounding.
    """

    backbone: str = "efficientnet_lite0"
    image_size: int = 256
    canvas: tuple[int, int] | None = None
    resize_mode: str = "fit_pad"
    aggregate: int = 3
    batch_size: int = 8
    seed: int = 0
    engine: str = "auto"


class AnomalyModel(ABC):
    """Base class of the registered anomaly models (see the module docstring)."""

    name: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        common = {k: params.pop(k) for k in list(params) if k in ModelConfig.__dataclass_fields__}
        if "canvas" in common and common["canvas"] is not None:
            common["canvas"] = tuple(common["canvas"])
        self.config = ModelConfig(**common)
        if self.config.backbone not in BACKBONES:
            raise InputError(
                "backbone",
                f"unknown backbone {self.config.backbone!r}; choose from {', '.join(sorted(BACKBONES))}",
            )
        self.params = self.default_params() | params
        unknown = set(self.params) - set(self.default_params())
        if unknown:
            raise InputError(
                "hyperparameters", f"{type(self).__name__}: unknown hyperparameters {sorted(unknown)}"
            )
        self._check_common()
        self.check_params()

    def _check_common(self) -> None:
        c = self.config
        checks = {
            "image_size": isinstance(c.image_size, int) and c.image_size >= 32,
            "batch_size": isinstance(c.batch_size, int) and c.batch_size >= 1,
            "aggregate": isinstance(c.aggregate, int) and c.aggregate >= 1 and c.aggregate % 2 == 1,
            "resize_mode": c.resize_mode in ("fit_pad", "stretch"),
            "canvas": c.canvas is None
            or (len(c.canvas) == 2 and all(v % 32 == 0 and v >= 32 for v in c.canvas)),
        }
        expected = {
            "image_size": "a whole number >= 32", "batch_size": "a whole number >= 1",
            "aggregate": "an odd whole number >= 1", "resize_mode": "'fit_pad' or 'stretch'",
            "canvas": "(height, width), multiples of 32",
            "engine": f"one of {ENGINES}",
        }  # fmt: skip
        for name, ok in checks.items():
            if not ok:
                raise InputError(name, f"must be {expected[name]}, got {getattr(c, name)!r}")

    @abstractmethod
    def check_params(self) -> None:
        """Validate model-specific hyperparameters, raising ``InputError`` naming the field."""

    @classmethod
    @abstractmethod
    def default_params(cls) -> dict[str, Any]:
        """Model-specific hyperparameters and their defaults."""

    # --- learned state -------------------------------------------------------------------
    @abstractmethod
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Learned tensors to save (names without the trailing underscore)."""

    @abstractmethod
    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore learned tensors saved by :meth:`state_tensors`."""

    @abstractmethod
    def scorer(self) -> nn.Module:
        """Torch module ``(B, 3, H, W)`` normalised canvas to ``(B, H/8, W/8)`` patch scores."""

    @abstractmethod
    def _fit_features(
        self, batches: Iterator[tuple[torch.Tensor, np.ndarray]], n_images: int, progress: Progress | None
    ) -> None:
        """Learn from ``(features (B, C, h, w), valid (B, h, w) bool)`` batches of good images."""

    # --- common machinery ----------------------------------------------------------------
    def hyperparameters(self) -> dict[str, Any]:
        """Everything ``__init__`` needs to rebuild this model, JSON-ready."""
        return {**asdict(self.config), **self.params}

    @property
    def is_fitted(self) -> bool:
        """True once :meth:`fit` or a load has set the learned state."""
        return getattr(self, "preprocessing_", None) is not None

    def _embedder(self) -> Embedder:
        if getattr(self, "embedder_", None) is None:
            self.embedder_ = Embedder(load_backbone(self.config.backbone), self.config.aggregate)
        return self.embedder_

    def _make_preprocessing(self, images: Sequence[np.ndarray]) -> Preprocessing:
        spec = BACKBONES[self.config.backbone]
        if self.config.canvas is not None:
            height, width = self.config.canvas
        else:
            height, width = choose_canvas([im.shape[:2] for im in images], self.config.image_size)
        return Preprocessing(height, width, self.config.resize_mode, spec.mean, spec.std)

    def fit(self, images: Sequence[np.ndarray], progress: Progress | None = None) -> AnomalyModel:
        """Learn what good parts look like.

        Args:
            images: good-part images, ``(H, W)`` or ``(H, W, 3)`` uint8/uint16, any sizes.
            progress: optional callback ``(stage, done, total)``.

        Returns:
            ``self``.
        """
        if len(images) == 0:
            raise ValueError("fit needs at least one good image")
        torch.manual_seed(self.config.seed)
        self.preprocessing_: Preprocessing | None = self._make_preprocessing(images)
        extract = make_runner(
            self._embedder(), self.preprocessing_.height, self.preprocessing_.width, self.config.engine
        )
        self.runner_: object | None = extract
        self._learn(images, extract, progress)
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

        def batches() -> Iterator[tuple[torch.Tensor, np.ndarray]]:
            size = self.config.batch_size
            for start in range(0, len(images), size):
                batch, geometries = to_batch(images[start : start + size], pre)
                features = extract(batch)
                valid = canvas_valid_mask(geometries, pre, STRIDE)
                if progress:
                    progress("features", min(start + size, len(images)), len(images))
                yield features, valid

        self._fit_features(batches(), len(images), progress)

    def patch_scores(self, batch: np.ndarray) -> np.ndarray:
        """Run the scorer on a preprocessed ``(B, 3, H, W)`` batch; returns ``(B, H/8, W/8)``."""
        # Only the frozen network goes through the engine; the learned head (distances to the
        # memory bank or Gaussians) stays in torch, so its large buffers are held once.
        runner = getattr(self, "runner_", None)
        if runner is None:
            assert self.preprocessing_ is not None
            pre = self.preprocessing_
            runner = make_runner(self._embedder(), pre.height, pre.width, self.config.engine)
            self.runner_ = runner
        features = runner(batch)
        with torch.inference_mode():
            scores: torch.Tensor = self.scorer().score_features(features)  # type: ignore[operator]
        return scores.numpy()

    def predict(self, images: Sequence[np.ndarray], progress: Progress | None = None) -> Prediction:
        """Score images.

        Args:
            images: ``(H, W)`` or ``(H, W, 3)`` uint8/uint16 arrays, any sizes.
            progress: optional callback ``(stage, done, total)``.

        Returns:
            Raw image scores ``(N,)`` and anomaly maps at each image's own size.
        """
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() or load a bundle")
        assert self.preprocessing_ is not None
        scores: list[float] = []
        maps: list[np.ndarray] = []
        size = self.config.batch_size
        for start in range(0, len(images), size):
            batch, geometries = to_batch(images[start : start + size], self.preprocessing_)
            patch = self.patch_scores(batch)
            batch_scores, batch_maps = finish_maps(patch, geometries, self.preprocessing_)
            scores.extend(float(score) for score in batch_scores)
            maps.extend(batch_maps)
            if progress:
                progress("predict", min(start + size, len(images)), len(images))
        return Prediction(np.asarray(scores, dtype=np.float32), tuple(maps))

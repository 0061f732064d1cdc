"""The one API every model follows, in the spirit of scikit-learn.

``__init__`` stores hyperparameters only; ``fit(images, targets)`` learns and returns ``self``;
``predict(images)`` returns a :class:`~flawscope.types.Prediction` (no thresholds: decisions live
in :mod:`flawscope.decide`). Learned state ends in ``_``.

**The contract.** A model declares (:meth:`Model.declaration`, a
:class:`~flawscope.declaration.ModelDeclaration`) its task, the labels it learns from, its class
names and its named outputs. Its torch graph is two parts: the shared frozen
:class:`~flawscope.features.embedder.Embedder` (backbone + multi-scale fusion,
``(B, 3, H, W)`` to ``(B, C, H/8, W/8)``) and the model's :meth:`Model.head`, which maps
those features to the declared outputs in declared order.
:meth:`Model.scorer` joins them (:class:`Scorer`); that module is what is exported to ONNX, with
the graph outputs named as declared, so one trunk pass feeds every head. The shared numpy
preprocessing (:mod:`flawscope.data.preprocess`) makes the input and the shared
:func:`~flawscope.data.outputs.finish_outputs` turns the named outputs into a prediction at each
image's size, in training, evaluation and the torch-free runtime alike.

:class:`~flawscope.models.anomaly.AnomalyModel` is the base of the good-parts-only models (one
``patch_scores`` output).
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from flawscope.data.imageio import ImageLike, as_images, is_path
from flawscope.data.outputs import concat_predictions, finish_outputs
from flawscope.data.preprocess import Preprocessing, check_tiling, choose_canvas, to_batch
from flawscope.data.tiling import layout, score_tiled
from flawscope.declaration import LabelKind, ModelDeclaration, OutputKind, Task
from flawscope.errors import InputError
from flawscope.features.backbones import BACKBONES, load_backbone
from flawscope.features.embedder import Embedder
from flawscope.models.engine import ENGINES, make_runner
from flawscope.models.views import ViewScorer, combine, expand
from flawscope.search.ivf import IvfIndex
from flawscope.types import Prediction, Targets

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]


class Scorer(nn.Module):
    """The exported graph: ``(B, 3, H, W)`` canvas to the model's declared outputs.

    One pass of the shared embedder feeds the head, which returns one tensor per declared
    output (a single tensor when there is one).
    """

    def __init__(self, embedder: nn.Module, head: nn.Module):
        super().__init__()
        self.embedder = embedder
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:  # noqa: D102
        out: torch.Tensor | tuple[torch.Tensor, ...] = self.head(self.embedder(x))
        return out

    def score_features(self, features: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The head alone on ``(B, C, h, w)`` embedder features."""
        out: torch.Tensor | tuple[torch.Tensor, ...] = self.head(features)
        return out


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
        score_area: the image score is the mean of the anomaly map's ``score_area`` highest
            values at canvas resolution, 0 its peak (:class:`~flawscope.data.preprocess.Preprocessing`);
            ``None`` takes the model's default (:attr:`Model.default_score_area`).
        tile: 0 fits and scores whole images on the canvas; ``t > 0`` (a multiple of 32) cuts
            every image into overlapping ``t x t`` tiles at its own resolution and the canvas is
            one tile (:mod:`flawscope.data.tiling`); ``batch_size`` then counts tiles.
        overlap: share of a tile its neighbours overlap, in ``[0, 1)``.
        tile_scale: magnification of the image before it is cut into tiles (2.0: a tile covers
            half the source pixels each way and the feature grid is twice as fine; 4x the tiles).
    """

    backbone: str = "efficientnet_lite0"
    image_size: int = 256
    canvas: tuple[int, int] | None = None
    resize_mode: str = "fit_pad"
    aggregate: int = 3
    batch_size: int = 8
    seed: int = 0
    engine: str = "auto"
    score_area: int | None = None
    tile: int = 0
    overlap: float = 0.25
    tile_scale: float = 1.0


class Model(ABC):
    """Base class of every registered model (see the module docstring).

    Class attributes ``task`` and ``labels`` say what a model class is for; :meth:`declaration`
    adds what a fitted instance knows (its classes).
    """

    name: ClassVar[str] = ""
    task: ClassVar[Task] = Task.ANOMALY
    labels: ClassVar[tuple[LabelKind, ...]] = (LabelKind.GOOD_PARTS,)
    # Whether the model can fit and score in tiles (``tile`` > 0; :mod:`flawscope.data.tiling`).
    tiles: ClassVar[bool] = False
    # How the anomaly map becomes the image score when ``score_area`` is not given (0: its peak).
    default_score_area: ClassVar[int] = 0
    # Learned state, set by fit() or a load (declared here, not assigned: an unfitted model has none).
    preprocessing_: Preprocessing | None
    runner_: Callable[[np.ndarray], torch.Tensor] | None

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
            "score_area": c.score_area is None
            or (isinstance(c.score_area, int) and not isinstance(c.score_area, bool) and c.score_area >= 0),
        }
        expected = {
            "image_size": "a whole number >= 32", "batch_size": "a whole number >= 1",
            "aggregate": "an odd whole number >= 1", "resize_mode": "'fit_pad' or 'stretch'",
            "canvas": "(height, width), multiples of 32",
            "score_area": "a whole number >= 0 or None",
            "engine": f"one of {ENGINES}",
        }  # fmt: skip
        for name, ok in checks.items():
            if not ok:
                raise InputError(name, f"must be {expected[name]}, got {getattr(c, name)!r}")
        check_tiling(c.tile, c.overlap, prefix="", tile_scale=c.tile_scale)
        if c.tile and not self.tiles:
            raise InputError(
                "tile",
                f"{self.name}: tiling is implemented for the good-parts models (padim, patchcore), "
                "not yet for models trained on labels; leave tile at 0",
            )

    @abstractmethod
    def check_params(self) -> None:
        """Validate model-specific hyperparameters, raising ``InputError`` naming the field."""

    @classmethod
    @abstractmethod
    def default_params(cls) -> dict[str, Any]:
        """Model-specific hyperparameters and their defaults."""

    @classmethod
    def saved_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """A saved bundle's hyperparameters as this version reads them.

        A hyperparameter added later with a default that differs from the old behaviour gets
        its old value here when a bundle predates it (the default: nothing to fill in).
        """
        return params

    # --- learned state -------------------------------------------------------------------
    @abstractmethod
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Learned tensors to save (names without the trailing underscore)."""

    @abstractmethod
    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore learned tensors saved by :meth:`state_tensors`."""

    @abstractmethod
    def declaration(self) -> ModelDeclaration:
        """Task, labels, classes and named outputs of this (fitted) model."""

    def load_declaration(self, declaration: ModelDeclaration) -> None:
        """Restore what a saved declaration holds that the tensors do not (class names).

        Good-parts models learn nothing but tensors, so the default does nothing.
        """
        return None

    @abstractmethod
    def head(self) -> nn.Module:
        """Torch module: ``(B, C, H/8, W/8)`` embedder features to the declared outputs, in order."""

    @abstractmethod
    def fit(
        self, images: Sequence[ImageLike], targets: Targets | None = None, progress: Progress | None = None
    ) -> Model:
        """Learn from images (arrays or file paths) and the labels the model declares; returns ``self``."""

    def _read_training_images(self, images: Sequence[ImageLike]) -> list[np.ndarray]:
        """The pixels of the images to fit on, read from the file paths among them.

        When all are file paths, :attr:`training_files_` keeps them, so that a bundle saved from
        this model knows which files it was trained on.

        Raises:
            InputError: naming the file, for a path that cannot be read as an image.
        """
        paths = [os.fspath(p) for p in images if is_path(p)]  # type: ignore[arg-type]
        self.training_files_: list[str] | None = paths if paths and len(paths) == len(images) else None
        return as_images(images)

    def fit_head(
        self,
        images: Sequence[np.ndarray],
        extract: Callable[[np.ndarray], torch.Tensor],
        progress: Progress | None = None,
    ) -> Model:
        """Re-learn what can be re-learnt cheaply on another extractor's features (INT8 export).

        The default keeps the learned heads as they are and only runs on ``extract`` from now
        on; good-parts models re-learn their statistics
        (:meth:`~flawscope.models.anomaly.AnomalyModel.fit_head`).
        """
        self.runner_ = extract
        return self

    # --- common machinery ----------------------------------------------------------------
    def hyperparameters(self) -> dict[str, Any]:
        """Everything ``__init__`` needs to rebuild this model, JSON-ready."""
        return {**asdict(self.config), **self.params}

    @property
    def is_fitted(self) -> bool:
        """True once :meth:`fit` or a load has set the learned state."""
        return getattr(self, "preprocessing_", None) is not None

    def views(self) -> tuple[int, ...]:
        """Test-time views the outputs are averaged over (:mod:`flawscope.models.views`; 0: as given)."""
        return (0,)

    def scorer(self) -> nn.Module:
        """The exported module: embedder and head (:class:`Scorer`), over the test-time views if any."""
        if self.views() != (0,):
            kinds = [spec.kind for spec in self.declaration().outputs]
            return ViewScorer(self._embedder(), self.head(), self.views(), kinds).eval()
        return Scorer(self._embedder(), self.head()).eval()

    def host_search(self) -> IvfIndex | None:
        """A nearest-neighbour index searched next to the graph rather than inside it, if any.

        When a model has one, its exported graph ends at the embedder's ``features`` and the
        index (saved as arrays) turns them into the declared ``patch_scores``, in training and
        in the runtime alike (:mod:`flawscope.search.ivf`).
        """
        return None

    def _runner(self) -> Callable[[np.ndarray], torch.Tensor]:
        runner = getattr(self, "runner_", None)
        if runner is None:
            assert self.preprocessing_ is not None
            pre = self.preprocessing_
            runner = make_runner(self._embedder(), pre.height, pre.width, self.config.engine)
            self.runner_ = runner
        return runner

    def raw_outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """The declared outputs of a preprocessed ``(B, 3, H, W)`` batch, by name."""
        # Only the frozen network goes through the engine; the learned head stays in torch, so
        # its large buffers (Gaussians, memory bank) are held once.
        views, declaration = self.views(), self.declaration()
        if views != (0,):  # the same views and averaging as the exported graph (ViewScorer)
            batch = expand(torch.from_numpy(batch), views).contiguous().numpy()
        features = self._runner()(batch)
        with torch.inference_mode():
            out = combine(self.head()(features), views, [spec.kind for spec in declaration.outputs])
        values = (out,) if isinstance(out, torch.Tensor) else tuple(out)
        names = declaration.output_names
        return {name: value.numpy() for name, value in zip(names, values, strict=True)}

    def _embedder(self) -> Embedder:
        if getattr(self, "embedder_", None) is None:
            backbone = load_backbone(self.config.backbone)
            self.embedder_ = Embedder(backbone, self.config.aggregate, fine=self._fine_level())
        return self.embedder_

    def _fine_level(self) -> bool:
        """Whether the embedder adds the stride-4 level (:class:`Embedder`; models trained on labels)."""
        return False

    def _make_preprocessing(self, images: Sequence[np.ndarray]) -> Preprocessing:
        spec = BACKBONES[self.config.backbone]
        area = self.default_score_area if self.config.score_area is None else self.config.score_area
        if self.config.tile:
            tile = self.config.tile
            pre = Preprocessing(
                tile,
                tile,
                "stretch",
                spec.mean,
                spec.std,
                score_area=area,
                tile=tile,
                overlap=self.config.overlap,
                tile_scale=self.config.tile_scale,
            )
            for image in images:  # every training image must hold a tile
                layout(image.shape, pre)
            return pre
        if self.config.canvas is not None:
            height, width = self.config.canvas
        else:
            height, width = choose_canvas([im.shape[:2] for im in images], self.config.image_size)
        return Preprocessing(height, width, self.config.resize_mode, spec.mean, spec.std, score_area=area)

    def predict(self, images: Sequence[ImageLike], progress: Progress | None = None) -> Prediction:
        """Score images.

        Args:
            images: ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` uint8/uint16 arrays of any sizes, or
                paths of image files (read one batch at a time).
            progress: optional callback ``(stage, done, total)``.

        Returns:
            The finished outputs (decision scores ``(N,)``, maps at each image's own size, ...).

        Raises:
            InputError: naming the file, for a path that cannot be read as an image.
        """
        if is_path(images) or isinstance(images, np.ndarray):
            raise InputError("images", "expected a list of images or file paths, got a single one")
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() or load a bundle")
        assert self.preprocessing_ is not None
        declaration = self.declaration()
        if self.preprocessing_.tile:
            return self._predict_tiled(images, progress)
        parts: list[Prediction] = []
        size = self.config.batch_size
        for start in range(0, len(images), size):
            batch, geometries = to_batch(as_images(images[start : start + size]), self.preprocessing_)
            parts.append(
                finish_outputs(self.raw_outputs(batch), geometries, self.preprocessing_, declaration)
            )
            if progress:
                progress("predict", min(start + size, len(images)), len(images))
        return concat_predictions(parts)

    def _predict_tiled(self, images: Sequence[ImageLike], progress: Progress | None) -> Prediction:
        """:meth:`predict` of a tiled model: tiles of ``batch_size`` images batched together."""
        pre = self.preprocessing_
        assert pre is not None
        declaration = self.declaration()
        if declaration.decision_kind is not OutputKind.ANOMALY_MAP:
            raise InputError("tile", f"{self.name}: tiling needs a model whose decision is an anomaly map")

        def run(batch: np.ndarray) -> np.ndarray:
            return self.raw_outputs(batch)[declaration.decision]

        scores: list[np.ndarray] = []
        maps: list[np.ndarray] = []
        size = self.config.batch_size
        for start in range(0, len(images), size):
            found = score_tiled(as_images(images[start : start + size]), pre, run, size)
            scores.append(found[0])
            maps.extend(found[1])
            if progress:
                progress("predict", min(start + size, len(images)), len(images))
        return Prediction(np.concatenate(scores).astype(np.float32), tuple(maps), "score")

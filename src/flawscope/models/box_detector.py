"""``box_detector``: class-labelled boxes from a dedicated box head on the shared frozen trunk.

The image classifier of :class:`~flawscope.models.supervised.SupervisedModel` (the category and
the defect score the thresholds judge) plus a :class:`~flawscope.models.box_head.CenterBoxHead`
trained on the same cached features from the VOC boxes. Its graph gives ``boxes`` (decoded in
the graph, :class:`~flawscope.models.box_head.BoxDecoder`) beside ``defect_score`` and
``class_probs``, so the torch-free runtime finishes the same boxes.

Training (:func:`~flawscope.models.box_training.train_box_head`): the clean view of every
training image (augmented views made by albumentations do not carry their boxes), horizontal
and vertical flips of the feature maps and their targets drawn at random per batch (recorded in
the manifest's augmentation), AdamW with a one-cycle schedule, and the state with the best
mAP@0.5 on the validation images kept. With ``finetune="last"`` the trunk's stride-16 blocks
learn with the box head first (:mod:`~flawscope.models.finetune_boxes`) and the head chosen
with them is deployed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from flawscope.data.preprocess import Geometry, geometry_of
from flawscope.declaration import GOOD, LabelKind, ModelDeclaration, OutputKind, OutputSpec, Task
from flawscope.errors import InputError
from flawscope.features.cache import FeatureBank
from flawscope.features.embedder import STRIDE
from flawscope.models.base import Progress
from flawscope.models.box_head import GAUSSIAN_SHARE, BoxDecoder, CenterBoxHead
from flawscope.models.box_training import (
    CanvasBox,
    canvas_map,
    choose_box_level,
    train_box_head,
    validation_boxes,
)
from flawscope.models.finetune import FinetuneConfig
from flawscope.models.finetune_boxes import BoxTuning, finetune_for_boxes
from flawscope.models.registry import register
from flawscope.models.supervised import SupervisedModel
from flawscope.types import Targets


def canvas_boxes(
    boxes: Sequence[tuple[float, float, float, float, str]], geometry: Geometry, classes: Sequence[str]
) -> list[CanvasBox]:
    """An image's boxes in canvas pixels, with the index of their class in ``classes``."""
    sx, sy = geometry.inner_width / geometry.width, geometry.inner_height / geometry.height
    return [
        (geometry.left + x0 * sx, geometry.top + y0 * sy, geometry.left + x1 * sx, geometry.top + y1 * sy,
         list(classes).index(c))
        for x0, y0, x1, y1, c in boxes
        if c in classes
    ]  # fmt: skip


class DetectorHead(nn.Module):
    """The exported head: the supervised head's outputs, then ``boxes`` ``(B, N, 6)``."""

    def __init__(self, supervised: nn.Module, decoder: BoxDecoder):
        super().__init__()
        self.supervised = supervised
        self.decoder = decoder

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:  # noqa: D102
        return (*self.supervised(features), self.decoder(features))


@register("box_detector")
class BoxDetector(SupervisedModel):
    """Learns class-labelled boxes with a centre-heatmap box head; the category from image labels.

    Hyperparameters (besides :class:`SupervisedModel`'s):
        box_width: the box head's channels.
        box_epochs: most passes over the training images.
        box_batch: images per step.
        box_lr: peak learning rate.
        box_patience: stop after this many epochs without a better validation mAP@0.5 (0: never).
        box_flips: flip feature maps and boxes at random while training.
        top_k: boxes the graph gives per image (highest confidence first).
        box_quality: a third head output learns each cell's box IoU; a box's confidence is the
            geometric mean of centre and quality (:class:`~flawscope.models.box_head.CenterBoxHead`).
        box_nms: the graph drops a box whose IoU with a higher-scored box of its class is above
            this (fast NMS, :func:`~flawscope.models.box_head.suppression`); 1.0 keeps all peaks.
        box_smooth: a peak's box is the confidence-weighted mean over its ``box_smooth`` x
            ``box_smooth`` neighbour cells (odd; 1: the peak's own box), in the graph.
        box_vote: box voting after the NMS at this IoU (1.0: off), in the graph.
        box_weighting: the sides' loss weights per cell, ``"gaussian"`` or ``"ttfnet"``
            (normalised per box, scaled by the log of its area).
        box_region: the Gaussian share (of the box's size) of the cells that regress a box.
        box_side_weight: the sides' GIoU loss weight against the centre loss (TTFNet: 5).
    """

    task: ClassVar[Task] = Task.DETECT
    labels: ClassVar[tuple[LabelKind, ...]] = (LabelKind.IMAGE, LabelKind.BOX)
    from_boxes: ClassVar[bool] = True
    tunable: ClassVar[bool] = True  # finetune="last": the stride-16 blocks learn with the box head
    _tuned_box_head: CenterBoxHead | None = None  # set by fine-tuning, taken by fit_bank

    @classmethod
    def default_params(cls) -> dict[str, Any]:  # noqa: D102
        return super().default_params() | {
            "box_width": 32,
            "box_epochs": 80,
            "box_batch": 16,
            "box_lr": 2e-3,
            "box_patience": 10,
            "box_flips": True,
            "top_k": 100,
            "box_nms": 0.6,
            "box_quality": True,
            "box_smooth": 1,
            "box_vote": 1.0,
            "box_weighting": "ttfnet",  # chosen on NEU's validation images (RESULTS)
            "box_region": GAUSSIAN_SHARE,
            "box_side_weight": 1.0,
        }

    @classmethod
    def saved_params(cls, params: dict[str, Any]) -> dict[str, Any]:  # noqa: D102
        # Bundles saved before "box_nms" existed kept every peak (their ONNX graphs have no NMS);
        # those before "box_smooth" / "box_vote" / "box_weighting" decoded and trained without them.
        before = {"box_nms": 1.0, "box_quality": False, "box_smooth": 1, "box_vote": 1.0,
                  "box_weighting": "gaussian", "box_region": GAUSSIAN_SHARE,
                  "box_side_weight": 1.0}  # fmt: skip
        return super().saved_params(before | params)

    def check_params(self) -> None:  # noqa: D102
        super().check_params()
        p = self.params
        for name in ("box_width", "box_epochs", "box_batch", "top_k"):
            if not isinstance(p[name], int) or p[name] < 1:
                raise InputError(name, f"must be a whole number >= 1, got {p[name]!r}")
        if not isinstance(p["box_patience"], int) or p["box_patience"] < 0:
            raise InputError("box_patience", f"must be a whole number >= 0, got {p['box_patience']!r}")
        if p["finetune"] == "full":
            raise InputError(
                "finetune", "a box_detector tunes the trunk's stride-16 blocks: use 'last' or 'none'"
            )
        if p["finetune_augment"] != "fixed":  # its fine-tuning flips the cached maps, nothing else
            raise InputError(
                "finetune_augment", "a box_detector's fine-tuning takes no fresh views: use 'fixed'"
            )
        if not isinstance(p["box_quality"], bool):
            raise InputError("box_quality", f"must be true or false, got {p['box_quality']!r}")
        for name in ("box_nms", "box_vote"):
            if isinstance(p[name], bool) or not isinstance(p[name], int | float) or not 0.0 < p[name] <= 1.0:
                raise InputError(name, f"must be a number in (0, 1], got {p[name]!r}")
        if not isinstance(p["box_smooth"], int) or isinstance(p["box_smooth"], bool) or p["box_smooth"] < 1 \
                or p["box_smooth"] % 2 == 0:  # fmt: skip
            raise InputError("box_smooth", f"must be an odd whole number >= 1, got {p['box_smooth']!r}")
        if p["box_weighting"] not in ("gaussian", "ttfnet"):
            raise InputError("box_weighting", f"must be 'gaussian' or 'ttfnet', got {p['box_weighting']!r}")
        if isinstance(p["box_region"], bool) or not isinstance(p["box_region"], int | float) \
                or not 0.0 < p["box_region"] <= 3.0:  # fmt: skip
            raise InputError("box_region", f"must be a number in (0, 3], got {p['box_region']!r}")
        side = p["box_side_weight"]
        if isinstance(side, bool) or not isinstance(side, int | float) or not 0.0 < side <= 100.0:
            raise InputError("box_side_weight", f"must be a number in (0, 100], got {side!r}")
        if not float(p["box_lr"]) > 0:
            raise InputError("box_lr", f"must be > 0, got {p['box_lr']!r}")

    def _box_classes(self) -> list[str]:
        return [c for c in self.classes_ if c != GOOD]

    def declaration(self) -> ModelDeclaration:  # noqa: D102
        base = super().declaration()
        import dataclasses

        # The region level learnt on the validation images: the verdicts' default for these boxes.
        level = getattr(self, "box_level_", None)
        extra = {**base.extra, "box_level": level} if level is not None else base.extra
        return dataclasses.replace(
            base, outputs=(*base.outputs, OutputSpec("boxes", OutputKind.BOXES)), extra=extra
        )

    def load_declaration(self, declaration: ModelDeclaration) -> None:  # noqa: D102
        super().load_declaration(declaration)
        # Bundles from before the level was learnt have none: their verdicts keep the default.
        level = declaration.extra.get("box_level")
        self.box_level_ = None if level is None else float(level)

    def make_bank(self, images: Sequence[np.ndarray], targets: Targets, train_idx: Sequence[int],
                  progress: Progress | None = None, runner: Any = None) -> FeatureBank:  # fmt: skip
        """As :meth:`SupervisedModel.make_bank`, keeping each image's place in the canvas for its boxes."""
        bank = super().make_bank(images, targets, train_idx, progress, runner)
        assert self.preprocessing_ is not None
        self._geometries = [geometry_of(im.shape, self.preprocessing_) for im in images]
        return bank

    def fit_bank(
        self,
        bank: FeatureBank,
        targets: Targets,
        train_idx: Sequence[int],
        val_idx: Sequence[int],
        progress: Progress | None = None,
        *,
        geometries: Sequence[Geometry] | None = None,
    ) -> BoxDetector:
        """Train the image head, then the box head, on a feature bank.

        Args:
            bank: features of the images ``targets`` describes.
            targets: the images' classes and boxes.
            train_idx: images to train on.
            val_idx: images whose mAP@0.5 chooses the epoch.
            progress: callback ``(stage, done, total)``.
            geometries: every image's place in the canvas (default: those :meth:`make_bank` saw).
        """
        super().fit_bank(bank, targets, train_idx, val_idx, progress)
        places = geometries if geometries is not None else getattr(self, "_geometries", None)
        if places is None:
            raise InputError("geometries", "the box head needs each image's place in the canvas")
        if not targets.boxes or not any(targets.boxes[i] for i in train_idx):
            raise InputError("targets.boxes", f"a {self.name} model needs boxes on its training images")
        classes = self._box_classes()
        boxes = [canvas_boxes(targets.boxes[i] if targets.boxes else (), places[i], classes)
                 for i in range(len(targets))]  # fmt: skip
        train_rows, val_rows = bank.rows(train_idx, views=False), bank.rows(val_idx, views=False)
        sample = bank.features[torch.from_numpy(train_rows[:: max(1, len(train_rows) // 256)])].float()
        tuned = getattr(self, "_tuned_box_head", None)
        if tuned is not None and getattr(self, "trunk_tuned_", False):
            # The head trained with the tuned trunk, at the epoch validation chose for both.
            self.box_module_, self._tuned_box_head = tuned, None
            box_log: dict[str, Any] = {"trained_with": "finetune", "seconds": 0.0}
        else:
            self.box_module_ = CenterBoxHead(
                int(bank.features.shape[1]), int(self.params["box_width"]), len(classes),
                sample.mean(dim=(0, 2, 3)), sample.std(dim=(0, 2, 3)), bool(self.params["box_quality"]),
            )  # fmt: skip
            box_log = train_box_head(self, bank, train_rows, val_rows, boxes, progress).to_dict()
        self.training_["augmentation"] = {
            **self.training_["augmentation"],
            "box_head": {"flips": bool(self.params["box_flips"]), "views": "clean views only"},
        }
        self.box_level_ = None
        if len(val_rows):
            from flawscope.decide.verdict import DEFAULT_BOX_LEVEL

            found, truth = validation_boxes(self, bank, val_rows, boxes)
            self.box_level_, levels = choose_box_level(found, truth, DEFAULT_BOX_LEVEL)
            box_log["region_levels"] = [
                {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in levels
            ]
        box_log["box_level"] = self.box_level_
        # In the training log, so the manifest records how the box head and its level were chosen.
        self.training_["log"]["box_head"] = box_log
        self.head_ = None
        return self

    def _finetune(self, images: Sequence[np.ndarray], targets: Targets, train_idx: list[int],
                  val_idx: list[int], progress: Progress | None) -> dict[str, Any] | None:  # fmt: skip
        """``finetune="last"``: the stride-16 blocks learn with a box head (:mod:`.finetune_boxes`)."""
        self.trunk_tuned_ = False
        if self.params["finetune"] == "none":
            return None
        self.classes_ = self._classes_for(targets)
        pre = self._make_preprocessing([images[i] for i in train_idx] or list(images))
        classes = self._box_classes()
        boxes = [canvas_boxes(targets.boxes[i] if targets.boxes else (), geometry_of(im.shape, pre), classes)
                 for i, im in enumerate(images)]  # fmt: skip
        if not any(boxes[i] for i in train_idx):
            raise InputError("targets.boxes", f"a {self.name} model needs boxes on its training images")
        p = self.params
        config = FinetuneConfig("last", p["finetune_epochs"], float(p["finetune_lr"]), p["finetune_patience"],
                                p["box_batch"], self.config.seed, p["threads"])  # fmt: skip
        score = functools.partial(canvas_map, classes)
        tuning = BoxTuning(boxes, len(classes), int(p["box_width"]), float(p["box_lr"]), STRIDE,
                           float(p["box_nms"]), bool(p["box_flips"]), score, bool(p["box_quality"]),
                           str(p["box_weighting"]), float(p["box_region"]),
                           float(p["box_side_weight"]))  # fmt: skip
        done, tuned = finetune_for_boxes(
            self._embedder(), self.config.backbone, images, train_idx, val_idx, pre, config, tuning,
            self.config.engine, progress,
        )  # fmt: skip
        self._tuned_box_head = tuned
        self.trunk_tuned_ = True
        self.runner_ = None
        return done.to_dict()

    def decoder(self) -> BoxDecoder:
        """The box head with its in-graph decoding."""
        index = torch.tensor([self.classes_.index(c) for c in self._box_classes()], dtype=torch.long)
        p = self.params
        return BoxDecoder(self.box_module_, STRIDE, int(p["top_k"]), index, float(p["box_nms"]),
                          int(p["box_smooth"]), float(p["box_vote"])).eval()  # fmt: skip

    def head(self) -> nn.Module:  # noqa: D102
        if getattr(self, "head_", None) is None:
            supervised = super().head()
            self.head_ = DetectorHead(supervised, self.decoder()).eval()
        assert self.head_ is not None
        return self.head_

    def state_tensors(self) -> dict[str, torch.Tensor]:  # noqa: D102
        return super().state_tensors() | {f"box.{k}": v for k, v in self.box_module_.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:  # noqa: D102
        super().load_state_tensors({k: v for k, v in tensors.items() if not k.startswith("box.")})
        box = {k.removeprefix("box."): v for k, v in tensors.items() if k.startswith("box.")}
        self.box_module_ = CenterBoxHead(
            int(box["mean"].shape[0]),
            int(self.params["box_width"]),
            len(self._box_classes()),
            quality=bool(self.params["box_quality"]),
        )
        self.box_module_.load_state_dict(box)
        self.box_module_.eval()
        self.head_ = None

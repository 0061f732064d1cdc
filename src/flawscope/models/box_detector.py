"""``box_detector``: class-labelled boxes from a dedicated box head on the shared frozen trunk.

The image classifier of :class:`~flawscope.models.supervised.SupervisedModel` (the category and
the defect score the thresholds judge) plus a :class:`~flawscope.models.box_head.CenterBoxHead`
trained on the same cached features from the VOC boxes. Its graph gives ``boxes`` (decoded in
the graph, :class:`~flawscope.models.box_head.BoxDecoder`) beside ``defect_score`` and
``class_probs``, so the torch-free runtime finishes the same boxes.

Training (:func:`train_box_head`): the clean view of every training image (augmented views made
by albumentations do not carry their boxes), horizontal and vertical flips of the feature maps
and their targets drawn at random per batch (recorded in the manifest's augmentation), AdamW
with a one-cycle schedule, and the state with the best mAP@0.5 on the validation images kept.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from flawscope.data.preprocess import Geometry, geometry_of
from flawscope.declaration import GOOD, LabelKind, ModelDeclaration, OutputKind, OutputSpec, Task
from flawscope.errors import InputError
from flawscope.features.cache import FeatureBank
from flawscope.models.base import STRIDE, Progress
from flawscope.models.box_head import (
    BoxDecoder,
    CenterBoxHead,
    box_targets,
    flip_targets,
    head_loss,
)
from flawscope.models.finetune import FinetuneConfig
from flawscope.models.finetune_boxes import BoxTuning, finetune_for_boxes
from flawscope.models.registry import register
from flawscope.models.supervised import SupervisedModel
from flawscope.models.training import choose_threads, torch_threads
from flawscope.types import Targets

log = logging.getLogger(__name__)
CanvasBox = tuple[float, float, float, float, int]


@dataclass
class BoxLog:
    """What happened while the box head trained (recorded in the manifest)."""

    epochs_run: int = 0
    best_epoch: int = 0
    train_loss: list[float] = field(default_factory=list)
    validation_map: list[float] = field(default_factory=list)
    seconds: float = 0.0
    threads: int = 1

    def to_dict(self) -> dict[str, Any]:  # noqa: D102
        data = asdict(self)
        data["train_loss"] = [round(v, 4) for v in self.train_loss]
        data["validation_map"] = [round(v, 4) for v in self.validation_map]
        return data


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
        box_quality: a third head output learns each cell's box IoU; confidences are centre x
            quality (:class:`~flawscope.models.box_head.CenterBoxHead`).
        box_nms: the graph drops a box whose IoU with a higher-scored box of its class is above
            this (fast NMS, :func:`~flawscope.models.box_head.suppression`); 1.0 keeps all peaks.
    """

    task: ClassVar[Task] = Task.DETECT
    labels: ClassVar[tuple[LabelKind, ...]] = (LabelKind.IMAGE, LabelKind.BOX)
    from_boxes: ClassVar[bool] = True
    tunable: ClassVar[bool] = True  # finetune="last": the stride-16 blocks learn with the box head
    _tuned_head: CenterBoxHead | None = None  # set by fine-tuning, taken by fit_bank

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
            "box_quality": False,
        }

    @classmethod
    def saved_params(cls, params: dict[str, Any]) -> dict[str, Any]:  # noqa: D102
        # Bundles saved before "box_nms" existed kept every peak (their ONNX graphs have no NMS).
        return super().saved_params({"box_nms": 1.0, "box_quality": False} | params)

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
        if not isinstance(p["box_quality"], bool):
            raise InputError("box_quality", f"must be true or false, got {p['box_quality']!r}")
        if not 0.0 < float(p["box_nms"]) <= 1.0:
            raise InputError("box_nms", f"must be in (0, 1], got {p['box_nms']!r}")
        if not float(p["box_lr"]) > 0:
            raise InputError("box_lr", f"must be > 0, got {p['box_lr']!r}")

    def _box_classes(self) -> list[str]:
        return [c for c in self.classes_ if c != GOOD]

    def declaration(self) -> ModelDeclaration:  # noqa: D102
        base = super().declaration()
        import dataclasses

        return dataclasses.replace(base, outputs=(*base.outputs, OutputSpec("boxes", OutputKind.BOXES)))

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
        tuned = getattr(self, "_tuned_head", None)
        if tuned is not None and getattr(self, "trunk_tuned_", False):
            # The head trained with the tuned trunk, at the epoch validation chose for both.
            self.box_module_, self._tuned_head = tuned, None
            self.training_["box_log"] = {"trained_with": "finetune", "seconds": 0.0}
        else:
            self.box_module_ = CenterBoxHead(
                int(bank.features.shape[1]), int(self.params["box_width"]), len(classes),
                sample.mean(dim=(0, 2, 3)), sample.std(dim=(0, 2, 3)), bool(self.params["box_quality"]),
            )  # fmt: skip
            self.training_["box_log"] = train_box_head(
                self, bank, train_rows, val_rows, boxes, progress
            ).to_dict()
        self.training_["augmentation"] = {
            **self.training_["augmentation"],
            "box_head": {"flips": bool(self.params["box_flips"]), "views": "clean views only"},
        }
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
        score = functools.partial(_canvas_map, classes)
        tuning = BoxTuning(boxes, len(classes), int(p["box_width"]), float(p["box_lr"]), STRIDE,
                           float(p["box_nms"]), bool(p["box_flips"]), score,
                           bool(p["box_quality"]))  # fmt: skip
        done, tuned = finetune_for_boxes(
            self._embedder(), self.config.backbone, images, train_idx, val_idx, pre, config, tuning,
            self.config.engine, progress,
        )  # fmt: skip
        self._tuned_head = tuned
        self.trunk_tuned_ = True
        self.runner_ = None
        return done.to_dict()

    def decoder(self) -> BoxDecoder:
        """The box head with its in-graph decoding."""
        index = torch.tensor([self.classes_.index(c) for c in self._box_classes()], dtype=torch.long)
        return BoxDecoder(
            self.box_module_, STRIDE, int(self.params["top_k"]), index, float(self.params["box_nms"])
        ).eval()

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


def _canvas_map(classes: Sequence[str], found: list[list[tuple[float, ...]]],
                truth: list[list[CanvasBox]]) -> float:  # fmt: skip
    """mAP@0.5 of canvas boxes ``(x0, y0, x1, y1, conf, k)`` against ``(x0, y0, x1, y1, k)``."""
    from flawscope.data.outputs import MIN_BOX_CONFIDENCE
    from flawscope.evaluate.supervised import detection_map

    named = [[(d[0], d[1], d[2], d[3], d[4], classes[int(d[5])]) for d in dets if d[4] >= MIN_BOX_CONFIDENCE]
             for dets in found]  # fmt: skip
    true = [[(t[0], t[1], t[2], t[3], classes[t[4]]) for t in boxes] for boxes in truth]
    value = detection_map(named, true, classes)["map"]
    return float(value) if value is not None else 0.0


def _validation_map(model: BoxDetector, bank: FeatureBank, rows: np.ndarray,
                    boxes: Sequence[Sequence[CanvasBox]]) -> float:  # fmt: skip
    """mAP@0.5 of the box head on bank rows, in canvas pixels."""
    from flawscope.data.outputs import MIN_BOX_CONFIDENCE
    from flawscope.evaluate.supervised import detection_map

    decoder = model.decoder()
    classes = list(model.classes_)
    names = model._box_classes()
    found: list[list[tuple[float, float, float, float, float, str]]] = []
    truth: list[list[tuple[float, float, float, float, str]]] = []
    with torch.inference_mode():
        for start in range(0, len(rows), 64):
            chunk = rows[start : start + 64]
            out = decoder(bank.features[torch.from_numpy(chunk)].float()).numpy()
            for row, dets in zip(chunk, out, strict=True):
                dets = dets[dets[:, 4] >= MIN_BOX_CONFIDENCE]
                found.append(
                    [
                        (float(d[0]), float(d[1]), float(d[2]), float(d[3]), float(d[4]), classes[int(d[5])])
                        for d in dets
                    ]
                )
                truth.append([(b[0], b[1], b[2], b[3], names[b[4]]) for b in boxes[int(bank.image[row])]])
    value = detection_map(found, truth, classes)["map"]
    return float(value) if value is not None else 0.0


def train_box_head(
    model: BoxDetector,
    bank: FeatureBank,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    boxes: Sequence[Sequence[CanvasBox]],
    progress: Progress | None = None,
) -> BoxLog:
    """Train ``model.box_module_`` in place on the clean bank rows (see the module docstring).

    Args:
        model: the detector (its hyperparameters, classes and new box head).
        bank: cached features ``(M, C, h, w)``.
        train_rows: bank rows to train on.
        val_rows: bank rows whose mAP@0.5 chooses the epoch (none: the last epoch is kept).
        boxes: per image, its canvas boxes with the class index among the defect classes.
        progress: callback ``(stage, done, total)``.
    """
    p = model.params
    head = model.box_module_
    h, w = int(bank.features.shape[2]), int(bank.features.shape[3])
    n_classes = len(model._box_classes())
    made = [box_targets(boxes[int(bank.image[r])], n_classes, h, w, STRIDE) for r in train_rows]
    heat = torch.from_numpy(np.stack([m[0] for m in made]))
    target = torch.from_numpy(np.stack([m[1] for m in made]))
    weight = torch.from_numpy(np.stack([m[2] for m in made]))
    out = BoxLog(threads=choose_threads(p["threads"]))
    rng = np.random.default_rng(model.config.seed)
    torch.manual_seed(model.config.seed)
    batch = int(p["box_batch"])
    steps = max(1, math.ceil(len(train_rows) / batch))
    epochs = int(p["box_epochs"])
    optimiser = torch.optim.AdamW(head.parameters(), lr=float(p["box_lr"]), weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, float(p["box_lr"]), total_steps=epochs * steps)
    best, best_map, stale = copy.deepcopy(head.state_dict()), -1.0, 0
    start = time.perf_counter()
    with torch_threads(out.threads):
        for epoch in range(epochs):
            head.train()
            total = 0.0
            order = rng.permutation(len(train_rows))
            for step in range(steps):
                pick = order[step * batch : (step + 1) * batch]
                if len(pick) < 2:  # batch norm needs two images
                    continue
                x = bank.features[torch.from_numpy(train_rows[pick])].float()
                t_heat, t_box, t_weight = heat[pick], target[pick], weight[pick]
                if p["box_flips"]:
                    if rng.random() < 0.5:
                        x = x.flip(-1)
                        t_heat, t_box, t_weight = flip_targets(t_heat, t_box, t_weight, w * STRIDE, -1)
                    if rng.random() < 0.5:
                        x = x.flip(-2)
                        t_heat, t_box, t_weight = flip_targets(t_heat, t_box, t_weight, h * STRIDE, -2)
                loss = head_loss(head(x), t_heat, t_box, t_weight, STRIDE)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                total += loss.item()
            out.train_loss.append(total / steps)
            out.epochs_run = epoch + 1
            if progress:
                progress("box head", epoch + 1, epochs)
            log.info("box head epoch %d: loss %.4f", epoch + 1, out.train_loss[-1])
            head.eval()
            if not len(val_rows):
                best, out.best_epoch = copy.deepcopy(head.state_dict()), epoch + 1
                continue
            value = _validation_map(model, bank, val_rows, boxes)
            out.validation_map.append(value)
            log.info("box head epoch %d: validation mAP@0.5 %.4f", epoch + 1, value)
            if value > best_map + 1e-4:
                best, best_map, stale, out.best_epoch = copy.deepcopy(head.state_dict()), value, 0, epoch + 1
            else:
                stale += 1
                if p["box_patience"] and stale >= p["box_patience"]:
                    break
    head.load_state_dict(best)
    head.eval()
    out.seconds = time.perf_counter() - start
    return out

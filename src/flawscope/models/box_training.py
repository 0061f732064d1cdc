"""Training the box detector's box head on cached features, and its mAP@0.5 in canvas pixels.

:func:`train_box_head` trains a :class:`~flawscope.models.box_head.CenterBoxHead` in place on
the clean bank rows of the training images (flips of the feature maps and their targets drawn at
random per batch), AdamW with a one-cycle schedule, keeping the state with the best validation
mAP@0.5.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from flawscope.features.cache import FeatureBank
from flawscope.features.embedder import STRIDE
from flawscope.models.base import Progress
from flawscope.models.box_head import box_targets, flip_targets, head_loss
from flawscope.models.device import choose_threads, torch_threads

if TYPE_CHECKING:
    from flawscope.models.box_detector import BoxDetector

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


def canvas_map(classes: Sequence[str], found: list[list[tuple[float, ...]]],
                truth: list[list[CanvasBox]]) -> float:  # fmt: skip
    """mAP@0.5 of canvas boxes ``(x0, y0, x1, y1, conf, k)`` against ``(x0, y0, x1, y1, k)``."""
    from flawscope.data.outputs import MIN_BOX_CONFIDENCE
    from flawscope.evaluate.supervised import detection_map

    named = [[(d[0], d[1], d[2], d[3], d[4], classes[int(d[5])]) for d in dets if d[4] >= MIN_BOX_CONFIDENCE]
             for dets in found]  # fmt: skip
    true = [[(t[0], t[1], t[2], t[3], classes[t[4]]) for t in boxes] for boxes in truth]
    value = detection_map(named, true, classes)["map"]
    return float(value) if value is not None else 0.0


Found = list[list[tuple[float, float, float, float, float, str]]]
Truth = list[list[tuple[float, float, float, float, str]]]
# The confidence levels a trained detector's region level is chosen among (``box_level_``).
BOX_LEVELS = tuple(round(0.1 + 0.05 * k, 2) for k in range(13))


def validation_boxes(model: BoxDetector, bank: FeatureBank, rows: np.ndarray,
                     boxes: Sequence[Sequence[CanvasBox]]) -> tuple[Found, Truth]:  # fmt: skip
    """The box head's decoded boxes on bank rows and the true ones, in canvas pixels, named."""
    from flawscope.data.outputs import MIN_BOX_CONFIDENCE

    decoder = model.decoder()
    classes = list(model.classes_)
    names = model._box_classes()
    found: Found = []
    truth: Truth = []
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
    return found, truth


def _validation_map(model: BoxDetector, bank: FeatureBank, rows: np.ndarray,
                    boxes: Sequence[Sequence[CanvasBox]]) -> float:  # fmt: skip
    """mAP@0.5 of the box head on bank rows, in canvas pixels."""
    from flawscope.evaluate.supervised import detection_map

    found, truth = validation_boxes(model, bank, rows, boxes)
    value = detection_map(found, truth, list(model.classes_))["map"]
    return float(value) if value is not None else 0.0


def choose_box_level(
    found: Found, truth: Truth, default: float
) -> tuple[float | None, list[dict[str, float]]]:
    """The confidence level whose kept boxes match the true ones best (F1 at IoU >= 0.5).

    A station's regions of a detector are its boxes at or above a level; the box confidences'
    scale depends on the model (a head that also learns each box's IoU gives sharper ones), so
    the level is learnt on the validation images rather than fixed.

    Args:
        found: per validation image, its decoded boxes ``(x0, y0, x1, y1, confidence, class)``.
        truth: per validation image, its true boxes ``(x0, y0, x1, y1, class)``.
        default: the level kept among equal F1s when it is one of them, else the nearest to it.

    Returns:
        The level (``None`` when no level's boxes match a true box: the default then applies)
        and every level's ``level``, ``precision``, ``recall`` and ``f1``.
    """
    from flawscope.evaluate.supervised import region_f1

    rows = [{"level": level, **region_f1(found, truth, level)} for level in BOX_LEVELS]
    best = max(r["f1"] for r in rows)
    if best <= 0.0:
        return None, rows
    tied = [r["level"] for r in rows if r["f1"] >= best - 1e-12]
    return min(tied, key=lambda level: (abs(level - default), level)), rows


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
    made = [box_targets(boxes[int(bank.image[r])], n_classes, h, w, STRIDE, str(p["box_weighting"]),
                        float(p["box_region"])) for r in train_rows]  # fmt: skip
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
                loss = head_loss(head(x), t_heat, t_box, t_weight, STRIDE, float(p["box_side_weight"]))
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

"""Fine-tuning the trunk for boxes: the stride-16 blocks trained with the box head's loss (issue 13).

The detection counterpart of :func:`~flawscope.models.finetune.finetune_trunk`: the frozen blocks
below stride 8 run once per image (cached), and every step trains the stride-16 blocks together
with a :class:`~flawscope.models.box_head.CenterBoxHead` on the box targets (centre focal loss +
GIoU of the sides), the stride-8 maps and their targets flipped at random. Batch norm keeps its
ImageNet statistics. The epoch kept is the one with the best mAP@0.5 of the head's boxes on the
validation images (never a test image); the head trained with it is returned, so the detector
deploys the very pair that was chosen. Only the EfficientNet-Lite trunks can be tuned.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flawscope.data.preprocess import Preprocessing
from flawscope.models.box_head import (
    GAUSSIAN_SHARE,
    BoxDecoder,
    CenterBoxHead,
    box_targets,
    flip_targets,
    head_loss,
)
from flawscope.models.device import choose_threads, torch_threads
from flawscope.models.engine import make_runner
from flawscope.models.finetune import FinetuneConfig, TuningLog
from flawscope.models.tuned_trunk import (
    EpochKeeper,
    Stride8,
    TunedPart,
    cache_inputs,
    check_trunk,
    tuned_prefixes,
    tuned_state,
)

Progress = Callable[[str, int, int], None]
CanvasBox = tuple[float, float, float, float, int]


@dataclass
class BoxFinetuneLog(TuningLog):
    """What fine-tuning for boxes did."""

    validation_map: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:  # noqa: D102
        return self._as_dict({"objective": "boxes"}, {"validation_map": self.validation_map})


@dataclass(frozen=True)
class BoxTuning:
    """The box head's side of fine-tuning.

    Attributes:
        boxes: per image (all of them), its canvas boxes ``(x0, y0, x1, y1, k)``, ``k`` the
            index among the defect classes.
        n_classes: defect classes ``K``.
        width: the head's channels.
        head_lr: the head's peak learning rate (the trunk's is the config's).
        stride: canvas pixels per cell.
        nms_iou: the decoder's overlap suppression while choosing the epoch.
        flips: flip the stride-8 maps and the targets at random.
        score: ``(found, truth) -> mAP@0.5`` of per-image ``(x0, y0, x1, y1, conf, k)`` boxes.
        quality: the head also learns each cell's box IoU (IoU-aware confidences).
        weighting: the sides' loss weights per cell (:func:`~flawscope.models.box_head.box_targets`).
        region: the Gaussian share of the cells that regress a box.
        side_weight: the GIoU loss's weight against the centre loss.
    """

    boxes: Sequence[Sequence[CanvasBox]]
    n_classes: int
    width: int
    head_lr: float
    stride: int
    nms_iou: float
    flips: bool
    score: Callable[[list[list[tuple[float, ...]]], list[list[CanvasBox]]], float]
    quality: bool = False
    weighting: str = "gaussian"
    region: float = GAUSSIAN_SHARE
    side_weight: float = 1.0


def finetune_for_boxes(
    embedder: nn.Module,
    backbone: str,
    images: Sequence[np.ndarray],
    train_idx: Sequence[int],
    val_idx: Sequence[int],
    pre: Preprocessing,
    config: FinetuneConfig,
    tuning: BoxTuning,
    engine: str = "auto",
    progress: Progress | None = None,
) -> tuple[BoxFinetuneLog, CenterBoxHead]:
    """Tune ``embedder.backbone``'s stride-16 blocks in place with a box head (module docstring).

    Returns:
        The log, and the head trained with the kept trunk (eval mode); the trunk holds the kept
        epoch's weights, frozen again.
    """
    trunk = check_trunk(embedder.backbone, backbone)  # type: ignore[arg-type]
    result = BoxFinetuneLog("last")
    threads = choose_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    train_idx, val_idx = list(train_idx), list(val_idx)
    with torch_threads(threads):
        prefix = make_runner(Stride8(trunk).eval(), pre.height, pre.width, engine)
        cached = cache_inputs(images, pre, prefix, progress)
    result.cache_seconds = time.perf_counter() - start
    tuned = TunedPart(trunk, "last")
    aggregate = int(getattr(embedder, "aggregate", 1))

    def features(x: torch.Tensor) -> torch.Tensor:
        f8, f16 = tuned(x)
        f16 = F.interpolate(f16, size=f8.shape[-2:], mode="bilinear", align_corners=False)
        out = torch.cat([f8, f16], dim=1)
        if aggregate > 1:
            out = F.avg_pool2d(out, aggregate, stride=1, padding=aggregate // 2, count_include_pad=False)
        return out

    with torch_threads(threads), torch.no_grad():
        sample = features(cached[torch.as_tensor(train_idx[:: max(1, len(train_idx) // 256)])].float())
    head = CenterBoxHead(int(sample.shape[1]), tuning.width, tuning.n_classes,
                         sample.mean(dim=(0, 2, 3)), sample.std(dim=(0, 2, 3)), tuning.quality)  # fmt: skip
    h, w = int(sample.shape[2]), int(sample.shape[3])
    shape = (tuning.n_classes, h, w, tuning.stride, tuning.weighting, tuning.region)
    made = [box_targets(tuning.boxes[i], *shape) for i in train_idx]
    heat, target, weight = (torch.from_numpy(np.stack([m[j] for m in made])) for j in range(3))
    prefixes = tuned_prefixes(trunk, "last")
    params = [p for name, p in trunk.named_parameters() if name.startswith(prefixes)]
    result.tuned_tensors = len(tuned_state(trunk, "last"))
    for p in params:
        p.requires_grad_(True)
    optimiser = torch.optim.AdamW(
        [{"params": params, "lr": config.lr}, {"params": head.parameters(), "lr": tuning.head_lr}],
        weight_decay=1e-4,
    )
    steps = max(1, -(-len(train_idx) // config.batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, [config.lr, tuning.head_lr], total_steps=steps * config.epochs, pct_start=0.15
    )
    best_map = -1.0
    keeper = EpochKeeper(trunk, head, "last", config.patience)
    trunk.eval()  # batch norm keeps its ImageNet statistics; only the weights learn
    try:
        with torch_threads(threads):
            for epoch in range(1, config.epochs + 1):
                head.train()
                order = rng.permutation(len(train_idx))
                total = 0.0
                for step in range(steps):
                    pick = order[step * config.batch_size : (step + 1) * config.batch_size]
                    if len(pick) < 2:  # batch norm in the head needs two images
                        continue
                    x = cached[torch.as_tensor([train_idx[k] for k in pick])].float()
                    t_heat, t_box, t_weight = heat[pick], target[pick], weight[pick]
                    if tuning.flips and rng.random() < 0.5:
                        x = x.flip(-1)
                        t_heat, t_box, t_weight = flip_targets(t_heat, t_box, t_weight, w * tuning.stride, -1)
                    if tuning.flips and rng.random() < 0.5:
                        x = x.flip(-2)
                        t_heat, t_box, t_weight = flip_targets(t_heat, t_box, t_weight, h * tuning.stride, -2)
                    out = head(features(x))
                    loss = head_loss(out, t_heat, t_box, t_weight, tuning.stride, tuning.side_weight)
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
                    schedule.step()
                    total += float(loss.detach())
                    if progress is not None and step + 1 < steps:
                        progress(f"fine-tuning epoch {epoch}", step + 1, steps)
                if progress is not None:  # also when the last, one-image batch was skipped
                    progress(f"fine-tuning epoch {epoch}", steps, steps)
                result.train_loss.append(total / steps)
                result.epochs_run = epoch
                head.eval()
                if not val_idx:
                    keeper.keep(epoch)
                    continue
                value = _score(head, features, cached, val_idx, tuning)
                result.validation_map.append(value)
                if value > best_map + 1e-4:
                    best_map = value
                    keeper.keep(epoch)
                elif keeper.miss():
                    break
    finally:
        keeper.restore()
    result.best_epoch = keeper.best_epoch
    result.seconds = time.perf_counter() - start
    return result, head


def _score(head: CenterBoxHead, features: Callable[[torch.Tensor], torch.Tensor], cached: torch.Tensor,
           rows: Sequence[int], tuning: BoxTuning) -> float:  # fmt: skip
    """mAP@0.5 of the head's decoded boxes on the clean images ``rows``, in canvas pixels."""
    decoder = BoxDecoder(head, tuning.stride, 100, torch.arange(tuning.n_classes), tuning.nms_iou).eval()
    found: list[list[tuple[float, ...]]] = []
    with torch.no_grad():
        for b in range(0, len(rows), 32):
            out = decoder(features(cached[torch.as_tensor(list(rows[b : b + 32]))].float())).numpy()
            found += [[tuple(float(v) for v in d) for d in o] for o in out]
    return tuning.score(found, [list(tuning.boxes[i]) for i in rows])

"""Fine-tuning the trunk for a classifier: its last blocks, or all of it (issue 13).

The supervised models train their heads on a frozen ImageNet trunk. Where that is not enough
(ELPV's cracks on solar cells), :func:`finetune_trunk` first trains trunk weights together with
a temporary classification head, in place, on the training images' labels:

* ``"last"``: the stride-16 blocks (EfficientNet-Lite stages 4 and 5). The stride-8 map of the
  frozen blocks below them is computed once per image view and cached (ONNX Runtime), so an
  epoch only runs the trained blocks, forward and backward.
* ``"full"``: every trunk weight, from the preprocessed images (cached once per view).

Augmented views (the model's :class:`~flawscope.data.augment.AugmentSpec`) are made once, before
the cache, and every epoch draws one view per training image (the clean one among them):
``augment="fixed"``. With ``augment="fresh"`` every epoch makes a new albumentations draw of every
training image instead (no clean view), and only those pass the frozen part again (for
``"last"`` about a third more CPU than an epoch of the tuned blocks). Batch norm
keeps its ImageNet statistics (batches of 16 are too small to re-estimate them). The epoch kept
is the one with the best accuracy on the validation images (lowest loss among ties): never a
test image. With ``ema`` (``finetune_ema``) an exponential moving average of the tuned weights
and the temporary head is what each epoch's validation judges and what is kept
(:mod:`flawscope.models.weight_average`); the exported graph is the same, only its weights
differ. The model then trains its ordinary head on the tuned trunk's features, and saves the
tuned weights with it (``trunk.*`` tensors), so the exported graph carries them.

Only the EfficientNet-Lite trunks can be fine-tuned (their blocks are what this splits); the
tuned part, its cache and the keeper of the best epoch are in :mod:`flawscope.models.tuned_trunk`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flawscope.data.augment import AugmentSpec, augmented_views
from flawscope.data.preprocess import Preprocessing
from flawscope.errors import InputError
from flawscope.models.device import choose_threads, torch_threads
from flawscope.models.engine import make_runner
from flawscope.models.heads import DefectHead
from flawscope.models.training import _balanced_weights
from flawscope.models.tuned_trunk import (
    EpochKeeper,
    Stride8,
    TunedPart,
    cache_inputs,
    check_trunk,
    tuned_prefixes,
    tuned_state,
)
from flawscope.models.weight_average import WeightAverage

FINETUNE_MODES = ("none", "last", "full")
FINETUNE_AUGMENT = ("fixed", "fresh")
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class FinetuneConfig:
    """How the trunk is fine-tuned.

    Attributes:
        mode: ``"last"`` (the stride-16 blocks) or ``"full"`` (every trunk weight).
        epochs: most passes over the training images.
        lr: the trunk's learning rate (the temporary head gets ten times it).
        patience: stop after this many epochs without a better validation accuracy (0: never).
        batch_size: images per step.
        seed: seed of every random choice.
        threads: torch threads (``None``: 1 on a busy machine, else all cores).
        width: the temporary head's decoder channels (the model's ``width``, so that the model
            can keep it as its head: ``finetune_head``).
        context: the temporary head's 3x3 convolutions and context branch (the model's ``context``).
        augment: ``"fixed"`` (the augmented views made once, drawn from every epoch) or
            ``"fresh"`` (a new augmented view of every training image every epoch).
        ema: decay per step of an exponential moving average of the tuned trunk weights and
            the temporary head (:mod:`flawscope.models.weight_average`): the average is what
            each epoch's validation judges and what is kept; 0 (the default): off.
    """

    mode: str = "last"
    epochs: int = 6
    lr: float = 3e-4
    patience: int = 2
    batch_size: int = 16
    seed: int = 0
    threads: int | None = None
    width: int = 32
    context: bool = True
    augment: str = "fixed"
    ema: float = 0.0


@dataclass
class TuningLog:
    """What any fine-tuning did (recorded in the manifest under ``training.finetune``)."""

    mode: str
    tuned_tensors: int = 0
    epochs_run: int = 0
    best_epoch: int = 0
    train_loss: list[float] = field(default_factory=list)
    cache_seconds: float = 0.0
    seconds: float = 0.0

    def _as_dict(self, tag: Mapping[str, str], validation: Mapping[str, list[float]]) -> dict[str, Any]:
        """The manifest's form: ``tag`` after the mode, the validation curves after the training loss."""
        return {
            "mode": self.mode,
            **tag,
            "tuned_tensors": self.tuned_tensors,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "train_loss": [round(v, 5) for v in self.train_loss],
            **{name: [round(v, 5) for v in curve] for name, curve in validation.items()},
            "cache_seconds": round(self.cache_seconds, 1),
            "seconds": round(self.seconds, 1),
        }


@dataclass
class FinetuneLog(TuningLog):
    """What fine-tuning for a classifier did."""

    validation_loss: list[float] = field(default_factory=list)
    validation_accuracy: list[float] = field(default_factory=list)
    augment: str = "fixed"
    fresh_seconds: float = 0.0  # making and caching the fresh views (``augment="fresh"``)
    soft: bool = False  # the loss learnt labelled class probabilities (``soft_labels``)
    ema: float = 0.0  # decay of the weights' moving average (``finetune_ema``; 0: off)
    # The temporary head of the epoch kept (on the tuned trunk's features); not in the manifest.
    head: DefectHead | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:  # noqa: D102
        extra: dict[str, Any] = (
            {"fresh_seconds": round(self.fresh_seconds, 1)} if self.augment == "fresh" else {}
        )
        extra |= {"soft_labels": True} if self.soft else {}
        extra |= {"ema": self.ema} if self.ema else {}
        return (
            self._as_dict(
                {"augment": self.augment},
                {"validation_loss": self.validation_loss, "validation_accuracy": self.validation_accuracy},
            )
            | extra
        )


def finetune_trunk(
    embedder: nn.Module,
    backbone: str,
    images: Sequence[np.ndarray],
    labels: np.ndarray,
    train_idx: Sequence[int],
    val_idx: Sequence[int],
    pre: Preprocessing,
    augment: AugmentSpec | None,
    config: FinetuneConfig,
    engine: str = "auto",
    progress: Progress | None = None,
    soft: np.ndarray | None = None,
) -> FinetuneLog:
    """Fine-tune ``embedder.backbone`` in place on image labels (see the module docstring).

    Args:
        embedder: the :class:`~flawscope.features.embedder.Embedder` whose trunk is tuned.
        backbone: the trunk's name (for messages).
        images: all images (training and validation).
        labels: ``(N,)`` class index of each image.
        train_idx: images to train on (with augmented views).
        val_idx: images that choose the epoch (clean views only); may be empty (last epoch kept).
        pre: the model's preprocessing (canvas).
        augment: augmented views per training image, or ``None``.
        config: how to fine-tune.
        engine: engine of the frozen part's cache (``"auto"``: ONNX Runtime when it works).
        progress: callback ``(stage, done, total)``.
        soft: ``(N, K)`` class probabilities of each image that the training loss learns
            instead of ``labels`` (labelled defect probabilities, ``soft_labels``); ``None``:
            the labels. The epoch is still chosen by the accuracy on ``labels``.

    Returns:
        The log; the trunk holds the weights of the epoch kept, frozen again (eval mode, no grads).
    """
    trunk = check_trunk(embedder.backbone, backbone)  # type: ignore[arg-type]
    if config.mode not in ("last", "full"):
        raise InputError("finetune", f"must be one of {FINETUNE_MODES}, got {config.mode!r}")
    if config.augment not in FINETUNE_AUGMENT:
        raise InputError("finetune_augment", f"must be one of {FINETUNE_AUGMENT}, got {config.augment!r}")
    fresh = augment if config.augment == "fresh" and augment is not None else None
    if isinstance(config.ema, bool) or not 0.0 <= config.ema < 1.0:
        raise InputError("finetune_ema", f"must be a number in [0, 1) (0: off), got {config.ema!r}")
    result = FinetuneLog(
        config.mode, augment="fresh" if fresh is not None else "fixed", soft=soft is not None,
        ema=float(config.ema),
    )  # fmt: skip
    threads = choose_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    train_idx, val_idx = list(train_idx), list(val_idx)
    # Rows of the cache: the clean view of every image, then the augmented views of the training
    # ones (none when every epoch draws fresh views).
    extra, _, source = augmented_views(
        [images[i] for i in train_idx], [None] * len(train_idx),
        augment if augment is not None and fresh is None else AugmentSpec(views=0),
    )  # fmt: skip
    with torch_threads(threads):
        prefix = (
            None
            if config.mode == "full"
            else make_runner(Stride8(trunk).eval(), pre.height, pre.width, engine)
        )
        cached = cache_inputs([*images, *extra], pre, prefix, progress)
    del extra
    views: list[list[int]] = [[i] for i in train_idx]
    for k, s in enumerate(source):
        views[s].append(len(images) + k)
    result.cache_seconds = time.perf_counter() - start

    tuned = TunedPart(trunk, config.mode)
    aggregate = int(getattr(embedder, "aggregate", 1))

    def features(rows: Sequence[int] | np.ndarray, source: torch.Tensor | None = None) -> torch.Tensor:
        """The trunk's features of cached ``rows`` (of ``source``, else the cache)."""
        f8, f16 = tuned((cached if source is None else source)[torch.as_tensor(np.asarray(rows))].float())
        f16 = F.interpolate(f16, size=f8.shape[-2:], mode="bilinear", align_corners=False)
        x = torch.cat([f8, f16], dim=1)
        if aggregate > 1:
            x = F.avg_pool2d(x, aggregate, stride=1, padding=aggregate // 2, count_include_pad=False)
        return x

    n_classes = int(labels.max()) + 1
    with torch_threads(threads), torch.no_grad():
        sample = features(train_idx[: min(64, len(train_idx))])
    head = DefectHead(
        sample.shape[1], config.width, n_classes, 0, config.context,
        sample.mean(dim=(0, 2, 3)), sample.std(dim=(0, 2, 3)),
    )  # fmt: skip
    prefixes = tuned_prefixes(trunk, config.mode)
    params = [p for name, p in trunk.named_parameters() if name.startswith(prefixes)]
    result.tuned_tensors = len(tuned_state(trunk, config.mode))
    for p in params:
        p.requires_grad_(True)
    optimiser = torch.optim.AdamW(
        [{"params": params, "lr": config.lr}, {"params": head.parameters(), "lr": 10 * config.lr}],
        weight_decay=1e-4,
    )
    counts = np.bincount(labels[train_idx], minlength=n_classes)
    weights = _balanced_weights(counts)
    steps = max(1, -(-len(train_idx) // config.batch_size)) * config.epochs
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, [config.lr, 10 * config.lr], total_steps=steps, pct_start=0.15
    )
    best: tuple[float, float] | None = None
    keeper = EpochKeeper(trunk, head, config.mode, config.patience)
    # With ``ema`` the averaged weights are swapped in to be judged and kept at each epoch's end.
    average = (
        WeightAverage(
            {**{f"trunk.{n}": p for n, p in trunk.named_parameters() if n.startswith(prefixes)},
             **{f"head.{n}": p for n, p in head.named_parameters()},
             **{f"head.{n}": b for n, b in head.named_buffers()}},
            config.ema,
        )
        if config.ema
        else None
    )  # fmt: skip
    judged = average.swapped if average is not None else contextlib.nullcontext
    trunk.eval()  # batch norm keeps its ImageNet statistics; only the weights learn
    try:
        with torch_threads(threads):
            for epoch in range(1, config.epochs + 1):
                drawn = None
                if fresh is not None:  # this epoch's own draw: row k is training image k
                    began = time.perf_counter()
                    drawn = _fresh_views(images, train_idx, fresh, int(rng.integers(2**31)), pre, prefix)
                    result.fresh_seconds += time.perf_counter() - began
                head.train()
                order = rng.permutation(len(train_idx))
                total, seen = 0.0, 0
                for b in range(0, len(order), config.batch_size):
                    chosen = order[b : b + config.batch_size]
                    if drawn is None:
                        rows = [views[k][int(rng.integers(len(views[k])))] for k in chosen]
                    else:
                        rows = list(chosen)
                    index = [train_idx[k] for k in chosen]
                    y = (
                        torch.from_numpy(labels[index]).long()
                        if soft is None
                        else torch.from_numpy(soft[index]).float()
                    )
                    _, logits = head(features(rows, drawn))
                    loss = F.cross_entropy(logits, y, weight=weights)
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
                    schedule.step()
                    if average is not None:
                        average.update()
                    total, seen = total + float(loss.detach()) * len(chosen), seen + len(chosen)
                    if progress is not None:
                        progress(f"fine-tuning epoch {epoch}", min(b + len(chosen), len(order)), len(order))
                result.train_loss.append(total / max(seen, 1))
                result.epochs_run = epoch
                with judged():
                    if not val_idx:
                        keeper.keep(epoch)
                        continue
                    accuracy, val_loss = _evaluate(head, features, val_idx, labels)
                    result.validation_accuracy.append(accuracy)
                    result.validation_loss.append(val_loss)
                    improved = best is None or (accuracy, -val_loss) > best
                    if improved:
                        best = (accuracy, -val_loss)
                        keeper.keep(epoch)
                if not improved and keeper.miss():
                    break
    finally:
        keeper.restore()
        result.best_epoch, result.head = keeper.best_epoch, head
    result.seconds = time.perf_counter() - start
    return result


def _fresh_views(
    images: Sequence[np.ndarray],
    train_idx: Sequence[int],
    augment: AugmentSpec,
    seed: int,
    pre: Preprocessing,
    prefix: Callable[[np.ndarray], torch.Tensor] | None,
) -> torch.Tensor:
    """``(len(train_idx), C, h, w)`` cached inputs of one new augmented view of each training image."""
    spec = dataclasses.replace(augment, views=1, seed=seed)
    drawn, _, _ = augmented_views([images[i] for i in train_idx], [None] * len(train_idx), spec)
    return cache_inputs(drawn, pre, prefix, None)


def _evaluate(
    head: DefectHead,
    features: Callable[[Sequence[int]], torch.Tensor],
    rows: Sequence[int],
    labels: np.ndarray,
) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of the clean views of ``rows``."""
    head.eval()
    right, loss = 0, 0.0
    with torch.no_grad():
        for b in range(0, len(rows), 32):
            chunk = list(rows[b : b + 32])
            _, logits = head(features(chunk))
            y = torch.from_numpy(labels[chunk]).long()
            right += int((logits.argmax(1) == y).sum())
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
    return right / len(rows), loss / len(rows)

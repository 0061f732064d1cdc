"""Training a :class:`~flawscope.models.heads.DefectHead` on cached features.

One loop for every supervised task: class-balanced sampling, free flips of the feature maps,
optional synthetic anomalies in feature space (:mod:`flawscope.models.synthetic`), the image
loss on every image (on its class, or on labelled class probabilities: ``soft``) and the
segmentation loss (cross-entropy + Dice on the defect probability) where the cell targets are
known. Early stopping keeps the state with the lowest validation loss (optionally averaged over
the last few epochs: on 91 validation images of a retrained station the loss jumped by 0.4 from
one epoch to the next, and the raw minimum chose epoch 14 in one retraining, 19 in the next); a
temperature for the class probabilities is then fitted on the validation images, and their
expected calibration error (ECE) is reported before and after. Where it runs (CPU threads or
a GPU) is :mod:`flawscope.models.device`'s.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from flawscope.evaluate.supervised import expected_calibration_error
from flawscope.features.cache import UNKNOWN, FeatureBank
from flawscope.models.device import choose_threads, full_precision, torch_threads
from flawscope.models.heads import DefectHead, defect_probability
from flawscope.models.synthetic import add_synthetic

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TrainConfig:
    """How a head is trained.

    Attributes:
        epochs: most passes over the training rows.
        batch_size: images per step.
        lr: peak learning rate (one-cycle schedule).
        weight_decay: AdamW weight decay.
        patience: stop after this many epochs without a better validation loss (0: never), and
            never during the schedule's warm-up (its first 30%, the learning rate rising).
        seg_weight: weight of the segmentation loss against the image loss.
        synthetic: probability that a good training image gets a synthetic feature anomaly.
        flips: flip feature maps (and targets) at random, horizontally and vertically.
        seed: seed of every random choice, the head's initial weights included (same data and
            seed, same head).
        threads: torch threads (``None``: 1 on a busy machine, else all cores).
        smooth: early stopping and the choice of the kept state judge the validation loss
            averaged over the last ``smooth`` epochs (1: the epoch's own loss), from the first
            epoch whose window is full.
        good_class: image class index of the good parts (``None``: no such class).
        good_weight: multiplies the good class's weight in the image loss (training and
            validation); sampling stays class-balanced. 1 keeps every class's loss balanced.
        device: the torch device the head trains on (:mod:`flawscope.models.device`); the
            trained head is returned on the CPU.
    """

    epochs: int = 20
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 5
    seg_weight: float = 1.0
    synthetic: float = 0.0
    flips: bool = True
    seed: int = 0
    threads: int | None = None
    smooth: int = 1
    good_class: int | None = None
    good_weight: float = 1.0
    device: str = "cpu"


@dataclass
class TrainLog:
    """What happened while training (recorded in the manifest)."""

    epochs_run: int = 0
    best_epoch: int = 0
    train_loss: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    temperature: float = 1.0
    ece_before: float | None = None
    ece_after: float | None = None
    seconds: float = 0.0
    threads: int = 1
    notes: list[str] = field(default_factory=list)
    seed: int = 0
    members: list[dict[str, Any]] = field(default_factory=list)
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:  # noqa: D102
        data = asdict(self)
        data["train_loss"] = [round(v, 5) for v in self.train_loss]
        data["validation_loss"] = [round(v, 5) for v in self.validation_loss]
        if not self.members:
            del data["members"]  # a single head: its log is this one
        return data


def _losses(
    head: torch.nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    cells: torch.Tensor,
    class_weights: torch.Tensor,
    seg_weights: torch.Tensor | None,
    seg_weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Total loss and the image logits of a batch (``labels``: class indices or class probabilities)."""
    seg, logits = head(x)
    loss = F.cross_entropy(logits, labels, weight=class_weights)
    if seg is not None and seg_weights is not None:
        known = cells != UNKNOWN
        if bool(known.any()):
            ce = F.cross_entropy(seg, cells.long().clamp_min(0), weight=seg_weights, reduction="none")
            ce = (ce * known).sum() / known.sum()
            prob = defect_probability(seg) * known
            target = ((cells > 0) & known).float()
            dice = 1.0 - (2.0 * (prob * target).sum() + 1.0) / (prob.sum() + target.sum() + 1.0)
            loss = loss + seg_weight * (ce + dice)
    return loss, logits


def seeded_init(head: torch.nn.Module, seed: int) -> None:
    """Draw the head's initial weights from ``seed`` (the global torch generator left as it was).

    A head built with ``torch``'s global generator started from whatever the process had drawn
    before: the same data and seed gave two different heads in two processes.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in head.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()


def loss_weights(
    head: DefectHead,
    bank: FeatureBank,
    train_rows: np.ndarray,
    labels: np.ndarray,
    synthetic_class: int | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class weights of the image loss and (segmenting heads) of the cell loss, from the training rows."""
    n_classes = head.classify.out_features
    class_weights = _balanced_weights(np.bincount(labels[train_rows], minlength=n_classes).astype(float))
    seg_weights = None
    if head.seg is not None:
        cells = bank.cells[torch.from_numpy(train_rows)]
        counts = np.bincount(cells[cells >= 0].numpy().astype(np.int64), minlength=head.seg_classes).astype(
            float
        )
        if synthetic_class is not None and counts[1:].sum() == 0:
            counts[1:] = counts[0] * 0.02  # only synthetic defects: a typical blob share
        # Defect cells are 1-5% of the cells: fully balanced weights (up to ~100x) made the maps
        # call most of a part defective (Dice 0.03 on a generated set); the square root keeps the
        # maps' probabilities usable as such (regions at 0.5) while still favouring the rare cells.
        seg_weights = _balanced_weights(counts, cap=10.0, power=0.5)
    return class_weights, seg_weights


def weigh_good(class_weights: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """The image loss's class weights with the good class's scaled by ``config.good_weight``."""
    if config.good_class is None or config.good_weight == 1.0:
        return class_weights
    scaled = class_weights.clone()
    scaled[config.good_class] *= float(config.good_weight)
    return scaled


def calibrate_head(
    head: torch.nn.Module,
    bank: FeatureBank,
    validation_rows: np.ndarray,
    labels: np.ndarray,
    class_weights: torch.Tensor,
    seg_weights: torch.Tensor | None,
    seg_weight: float,
    log_out: TrainLog,
) -> None:
    """Fit the temperature (and measure the ECE) on the validation rows, into ``log_out``."""
    if not len(validation_rows) or len(np.unique(labels[validation_rows])) < 2:
        return
    if len(validation_rows) < MIN_TEMPERATURE_IMAGES:
        # A temperature fitted on a handful of images is noise; at the grid's end (0.2) it
        # saturated a retrained station's defect scores at 1.0 for 5% of good parts.
        log_out.notes.append(
            f"{len(validation_rows)} validation images (< {MIN_TEMPERATURE_IMAGES}): no temperature"
        )
        return
    _, logits = _evaluate(head, bank, validation_rows, labels, class_weights, seg_weights, seg_weight)
    truth = torch.from_numpy(labels[validation_rows]).long()
    log_out.temperature = fit_temperature(logits, truth)
    log_out.ece_before = expected_calibration_error(torch.softmax(logits, 1).numpy(), truth.numpy())
    log_out.ece_after = expected_calibration_error(
        torch.softmax(logits / log_out.temperature, 1).numpy(), truth.numpy()
    )


def _balanced_weights(counts: np.ndarray, cap: float = 20.0, power: float = 1.0) -> torch.Tensor:
    present = np.maximum(counts, 1)
    weights = (counts.sum() / (len(counts) * present)) ** power
    return torch.tensor(np.minimum(weights, cap), dtype=torch.float32)


WARM_UP = 0.3  # share of the one-cycle schedule whose learning rate rises (torch's default)
MIN_TEMPERATURE_IMAGES = 20  # validation images needed to fit a temperature at all


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature minimising the validation negative log-likelihood (grid over 0.2-10)."""
    grid = np.exp(np.linspace(math.log(0.2), math.log(10.0), 80))
    with torch.no_grad():
        nll = [float(F.cross_entropy(logits / t, labels)) for t in grid]
    return float(grid[int(np.argmin(nll))])


def train_head(
    head: DefectHead,
    bank: FeatureBank,
    train_rows: np.ndarray,
    validation_rows: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    synthetic_class: int | None = None,
    progress: Progress | None = None,
    soft: np.ndarray | None = None,
) -> TrainLog:
    """Train ``head`` in place on bank rows.

    Args:
        head: a new head (its standardisation buffers set).
        bank: cached features and cell targets.
        train_rows: bank rows to train on.
        validation_rows: bank rows for early stopping and temperature (may be empty).
        labels: ``(M,)`` image class index of every bank row.
        config: how to train.
        synthetic_class: image class of synthetic anomalies (``None``: no synthetic anomalies).
        progress: callback ``(stage, done, total)``.
        soft: ``(M, K)`` class probabilities of every bank row that the training loss learns
            instead of ``labels`` (``None``: the labels); sampling, early stopping and the
            temperature still read ``labels``. Not with synthetic anomalies.

    Returns:
        The training log; the head holds the best state found.
    """
    if soft is not None and synthetic_class is not None:
        raise ValueError("soft targets and synthetic anomalies cannot be combined")
    log_out = TrainLog(threads=choose_threads(config.threads), seed=config.seed, device=config.device)
    start = time.perf_counter()
    if len(validation_rows) and len(np.unique(labels[validation_rows])) < 2:
        # Good parts only (a mixed model with a few labelled defects): the lowest validation loss
        # is the least sensitive head, and the temperature would flatten every defect towards
        # good (the mixed ladder on kolektorsdd fell to chance this way). Train every epoch instead.
        log_out.notes.append(
            "the validation images are all of one class: no early stopping and no temperature"
        )
        validation_rows = validation_rows[:0]
    rng = np.random.default_rng(config.seed)
    seeded_init(head, config.seed)
    torch.manual_seed(config.seed)
    class_weights, seg_weights = loss_weights(head, bank, train_rows, labels, synthetic_class)
    good_rows = labels[train_rows] != synthetic_class if synthetic_class is not None else None
    # Class-balanced over images: each row's weight is shared among its image's views.
    per_image = np.bincount(bank.image[train_rows], minlength=int(bank.image.max()) + 1)
    sample_p = class_weights.numpy()[labels[train_rows]] / per_image[bank.image[train_rows]]
    sample_p = sample_p / sample_p.sum()
    class_weights = weigh_good(class_weights, config)
    # On a GPU (``config.device``) the head goes there, and the bank's features too, once (half
    # precision, as cached): each batch is then indexed and converted there instead of copied
    # from the CPU every step. The batches' random draws are made on the CPU either way.
    device = torch.device(config.device)
    head.to(device)
    features = bank.features if device.type == "cpu" else bank.features.to(device)
    weights_on = (class_weights.to(device), None if seg_weights is None else seg_weights.to(device))
    # An epoch is one image's worth of steps per training image; augmented views are alternatives
    # drawn in their image's place, not extra passes (which would multiply the training time).
    n_images = len(np.unique(bank.image[train_rows]))
    steps_per_epoch = max(1, math.ceil(n_images / config.batch_size))
    optimiser = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=WARM_UP
    )
    best_state, best_loss, stale = copy.deepcopy(head.state_dict()), math.inf, 0
    warm_up = math.ceil(WARM_UP * config.epochs)
    with torch_threads(log_out.threads), full_precision():
        for epoch in range(config.epochs):
            head.train()
            total = 0.0
            for _ in range(steps_per_epoch):
                pick = rng.choice(len(train_rows), size=config.batch_size, p=sample_p)
                rows = train_rows[pick]
                index = torch.from_numpy(rows)
                x = features[index.to(features.device)].float()
                cells = bank.cells[index].clone()
                cells[~bank.valid[index]] = UNKNOWN
                y = torch.from_numpy(labels[rows]).long()
                if synthetic_class is not None and good_rows is not None and config.synthetic > 0:
                    x, cells, y = add_synthetic(
                        head, x, cells, y, good_rows[pick], synthetic_class, config.synthetic, rng
                    )
                if config.flips:
                    if rng.random() < 0.5:
                        x, cells = x.flip(-1), cells.flip(-1)
                    if rng.random() < 0.5:
                        x, cells = x.flip(-2), cells.flip(-2)
                target = y if soft is None else torch.from_numpy(soft[rows]).float()
                loss, _ = _losses(
                    head, x.to(device), target.to(device), cells.to(device), *weights_on, config.seg_weight
                )
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                total += loss.item()
            log_out.train_loss.append(total / steps_per_epoch)
            log_out.epochs_run = epoch + 1
            if progress:
                progress("training", epoch + 1, config.epochs)
            if len(validation_rows) == 0:
                best_state, log_out.best_epoch = copy.deepcopy(head.state_dict()), epoch + 1
                continue
            val_loss, _ = _evaluate(head, bank, validation_rows, labels, *weights_on, config.seg_weight)
            log_out.validation_loss.append(val_loss)
            window = log_out.validation_loss[-max(1, config.smooth) :]
            if len(window) < config.smooth and epoch + 1 < config.epochs:
                # An average of fewer epochs is not comparable with the later ones: with the
                # first epoch's loss alone as the best, a retrained head (magnetic_tile, seed 40)
                # was kept at epoch 1 while its loss rose in the warm-up.
                continue
            val_loss = sum(window) / len(window)
            if val_loss < best_loss - 1e-4:
                best_state, best_loss, stale, log_out.best_epoch = (
                    copy.deepcopy(head.state_dict()),
                    val_loss,
                    0,
                    epoch + 1,
                )
            else:
                stale += 1
                # The one-cycle schedule raises the learning rate over its first 30%, where the
                # validation loss may rise too: no stop before the peak.
                if config.patience and stale >= config.patience and epoch + 1 > warm_up:
                    break
        head.load_state_dict(best_state)
        head.to("cpu")
        head.eval()
        calibrate_head(
            head, bank, validation_rows, labels, class_weights, seg_weights, config.seg_weight, log_out
        )
    log_out.seconds = time.perf_counter() - start
    return log_out


def _evaluate(
    head: torch.nn.Module,
    bank: FeatureBank,
    rows: np.ndarray,
    labels: np.ndarray,
    class_weights: torch.Tensor,
    seg_weights: torch.Tensor | None,
    seg_weight: float,
) -> tuple[float, torch.Tensor]:
    """Mean loss and image logits (on the CPU) over rows (no flips, no synthetic anomalies).

    The batches run on the head's device; the weights must be there too.
    """
    head.eval()
    device = next(head.parameters()).device
    total, logits = 0.0, []
    with torch.no_grad():
        for start in range(0, len(rows), 32):
            index = torch.from_numpy(rows[start : start + 32])
            cells = bank.cells[index].clone()
            cells[~bank.valid[index]] = UNKNOWN
            y = torch.from_numpy(labels[rows[start : start + 32]]).long()
            x = bank.features[index].float()
            loss, out = _losses(
                head, x.to(device), y.to(device), cells.to(device), class_weights, seg_weights, seg_weight
            )
            total += float(loss) * len(index)
            logits.append(out.cpu())
    return total / max(len(rows), 1), torch.cat(logits)

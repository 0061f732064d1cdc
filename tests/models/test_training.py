"""Training a head on cached features: what validation may decide."""

from __future__ import annotations

import numpy as np
import torch

from flawscope.features.cache import FeatureBank
from flawscope.models.heads import DefectHead
from flawscope.models.training import TrainConfig, train_head


def _bank(
    n: int = 24, channels: int = 8, *, every: int = 3, shift: float = 3.0, seed: int = 0
) -> tuple[FeatureBank, np.ndarray]:
    """``n`` parts, every ``every``-th a defect whose first channel is ``shift`` higher."""
    rng = np.random.default_rng(seed)
    labels = np.array([i % every == 0 for i in range(n)], dtype=np.int64)
    features = rng.normal(size=(n, channels, 4, 4)).astype(np.float32)
    features[labels == 1, 0] += shift  # defects differ in one channel
    bank = FeatureBank(
        torch.from_numpy(features).half(),
        torch.ones(n, 4, 4, dtype=torch.bool),
        torch.zeros(n, 4, 4, dtype=torch.int16),
        np.arange(n),
        np.zeros(n, dtype=np.int64),
    )
    return bank, labels


def test_validation_of_one_class_neither_stops_early_nor_sets_the_temperature():
    bank, labels = _bank()
    good_only = np.flatnonzero(labels == 0)[-4:]
    train = np.setdiff1d(np.arange(len(labels)), good_only)
    head = DefectHead(8, 8, 2, 0, False)
    config = TrainConfig(6, 4, 1e-2, 0.0, 1, 1.0, 0.0, True, 0, 1)
    log = train_head(head, bank, train, good_only, labels, config)
    assert log.epochs_run == 6 and log.best_epoch == 6 and log.temperature == 1.0
    assert log.notes and "one class" in log.notes[0]


def test_validation_of_both_classes_is_used():
    bank, labels = _bank(48)
    val = np.arange(24)
    train = np.setdiff1d(np.arange(len(labels)), val)
    head = DefectHead(8, 8, 2, 0, False)
    config = TrainConfig(6, 4, 1e-2, 0.0, 0, 1.0, 0.0, True, 0, 1)
    log = train_head(head, bank, train, val, labels, config)
    assert len(log.validation_loss) == 6 and not log.notes and log.ece_after is not None


def test_a_handful_of_validation_images_stops_early_but_sets_no_temperature():
    # A temperature fitted on 3 images (0.2, the grid's end) saturated a retrained station's scores.
    bank, labels = _bank()
    val = np.array([0, 1, 2, 3, 4, 5])
    train = np.setdiff1d(np.arange(len(labels)), val)
    head = DefectHead(8, 8, 2, 0, False)
    config = TrainConfig(6, 4, 1e-2, 0.0, 0, 1.0, 0.0, True, 0, 1)
    log = train_head(head, bank, train, val, labels, config)
    assert len(log.validation_loss) == 6 and log.temperature == 1.0
    assert log.notes and "no temperature" in log.notes[0]


def _state(head: torch.nn.Module) -> torch.Tensor:
    return torch.cat([v.float().flatten() for v in head.state_dict().values()])


def test_the_same_data_and_seed_give_the_same_head_whatever_was_drawn_before():
    # A head built from torch's global generator started from whatever the process had drawn
    # before: two retrainings of the same data and seed gave different stations.
    bank, labels = _bank(48)
    val = np.arange(24)
    train = np.setdiff1d(np.arange(len(labels)), val)
    config = TrainConfig(4, 4, 1e-2, 0.0, 0, 1.0, 0.0, True, 7, 1)
    heads = []
    for before in (1, 2):
        torch.manual_seed(before)  # another history of the global generator
        head = DefectHead(8, 8, 2, 0, False)
        train_head(head, bank, train, val, labels, config)
        heads.append(head)
    other = DefectHead(8, 8, 2, 0, False)
    train_head(other, bank, train, val, labels, TrainConfig(4, 4, 1e-2, 0.0, 0, 1.0, 0.0, True, 8, 1))
    assert torch.equal(_state(heads[0]), _state(heads[1]))
    assert not torch.equal(_state(heads[0]), _state(other))


def test_early_stopping_judges_the_smoothed_validation_loss():
    bank, labels = _bank(48)
    val = np.arange(24)
    train = np.setdiff1d(np.arange(len(labels)), val)
    for smooth in (1, 3):
        config = TrainConfig(12, 4, 5e-2, 0.0, 2, 1.0, 0.0, True, 0, 1, smooth)
        log = train_head(DefectHead(8, 8, 2, 0, False), bank, train, val, labels, config)
        raw = log.validation_loss
        # The average of fewer than `smooth` epochs is never the best (a head kept at epoch 1).
        smoothed = [float(np.mean(raw[i - smooth + 1 : i + 1])) for i in range(smooth - 1, len(raw))]
        best = int(np.argmin(smoothed)) + smooth - 1
        assert log.best_epoch == best + 1 >= smooth
        # It stopped 2 epochs after the smoothed loss last improved (never in the 4-epoch
        # warm-up), or at the last epoch.
        assert log.epochs_run in (max(4 + 1, best + 1 + 2), 12)


def test_no_early_stop_in_the_warm_up_even_when_the_first_epoch_was_best():
    bank, labels = _bank(48)
    val = np.arange(24)
    train = np.setdiff1d(np.arange(len(labels)), val)
    # A learning rate far too high: the validation loss rises after the first epoch.
    config = TrainConfig(20, 4, 5.0, 0.0, 1, 1.0, 0.0, True, 0, 1)
    log = train_head(DefectHead(8, 8, 2, 0, False), bank, train, val, labels, config)
    assert log.epochs_run > 6  # the warm-up is the first 6 of 20 epochs


def test_a_heavier_good_class_makes_the_head_surer_of_good_parts():
    # Overlapping classes: how much the loss counts the good parts moves where the head settles.
    bank, labels = _bank(96, every=4, shift=1.0, seed=3)
    train = np.arange(len(labels))
    p_good = []
    for weight in (1.0, 8.0):
        head = DefectHead(8, 8, 2, 0, False)
        config = TrainConfig(8, 8, 1e-2, 0.0, 0, 1.0, 0.0, True, 0, 1, good_class=0, good_weight=weight)
        train_head(head, bank, train, train[:0], labels, config)
        with torch.no_grad():
            _, logits = head(bank.features[torch.from_numpy(train)].float())
        p_good.append(float(torch.softmax(logits, 1)[torch.from_numpy(labels == 0), 0].mean()))
    assert p_good[1] > p_good[0] + 0.05

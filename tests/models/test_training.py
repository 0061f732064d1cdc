"""Training a head on cached features: what validation may decide."""

from __future__ import annotations

import numpy as np
import torch

from flawscope.features.cache import FeatureBank
from flawscope.models.heads import DefectHead
from flawscope.models.training import TrainConfig, train_head


def _bank(n: int = 24, channels: int = 8) -> tuple[FeatureBank, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.array([i % 3 == 0 for i in range(n)], dtype=np.int64)  # a third are defects
    features = rng.normal(size=(n, channels, 4, 4)).astype(np.float32)
    features[labels == 1, 0] += 3.0  # defects differ in one channel
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

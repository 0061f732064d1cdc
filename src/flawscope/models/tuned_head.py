"""Which head a classifier with a fine-tuned trunk keeps (the hyperparameter ``finetune_head``).

Fine-tuning (:mod:`flawscope.models.finetune`) trains the trunk together with a temporary head
of the model's own architecture. Afterwards the model can

* ``"retrain"``: train its ordinary head on the tuned trunk's cached features (augmented views,
  feature flips, early stopping on the validation loss), as for a frozen trunk;
* ``"keep"``: keep the temporary head of the epoch kept (trained with the trunk, on the same
  augmented views), its temperature fitted on the validation images;
* ``"best"``: do both and keep the head with the higher validation accuracy (then the lower
  validation log-loss, both at the head's temperature). Only validation images decide.

Why a choice: the features the temporary head trained on moved with it, epoch by epoch; a new
head trained on their final state starts from scratch on features that already separate the
training images well, and on ELPV it stopped early at a worse validation loss than the frozen
trunk's (``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flawscope.features.cache import FeatureBank
from flawscope.models.training import TrainLog, _evaluate, calibrate_head

HEAD_CHOICES = ("retrain", "keep", "best")


def kept_head_log(head: nn.Module, bank: FeatureBank, val_rows: np.ndarray, labels: np.ndarray) -> TrainLog:
    """The log of a kept head: its temperature and ECE fitted on the validation rows."""
    log = TrainLog(notes=["the head trained with the trunk while fine-tuning, kept (finetune_head)"])
    ones = torch.ones(int(labels.max()) + 1)
    calibrate_head(head, bank, val_rows, labels, ones, None, 0.0, log)
    return log


def validation_scores(
    head: nn.Module, temperature: float, bank: FeatureBank, val_rows: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """Accuracy and mean log-loss (at ``temperature``) of a head on the validation rows."""
    ones = torch.ones(int(labels.max()) + 1)
    _, logits = _evaluate(head, bank, val_rows, labels, ones, None, 0.0)
    truth = torch.from_numpy(labels[val_rows]).long()
    return {
        "validation_accuracy": float((logits.argmax(1) == truth).float().mean()),
        "validation_log_loss": float(F.cross_entropy(logits / temperature, truth)),
    }


def choose_head(
    mode: str,
    retrained: tuple[nn.Module, TrainLog] | None,
    kept: nn.Module | None,
    bank: FeatureBank,
    val_rows: np.ndarray,
    labels: np.ndarray,
) -> tuple[nn.Module, TrainLog, dict[str, Any] | None]:
    """The head ``mode`` keeps, its log, and (for ``"best"``) what the choice saw.

    Args:
        mode: ``finetune_head`` (:data:`HEAD_CHOICES`).
        retrained: the ordinary head trained on the tuned features and its log (not for ``"keep"``).
        kept: the fine-tuning's head (``None`` when the trunk was not tuned).
        bank: the tuned trunk's features.
        val_rows: the validation rows (clean views).
        labels: every bank row's class index.
    """
    if kept is None or mode == "retrain":
        assert retrained is not None
        return retrained[0], retrained[1], None
    kept_log = kept_head_log(kept, bank, val_rows, labels)
    if mode == "keep":
        return kept, kept_log, None
    assert retrained is not None
    if not len(val_rows):
        retrained[1].notes.append("no validation images: the retrained head is kept (finetune_head='best')")
        return retrained[0], retrained[1], None
    seen = {
        "retrain": validation_scores(retrained[0], retrained[1].temperature, bank, val_rows, labels),
        "keep": validation_scores(kept, kept_log.temperature, bank, val_rows, labels),
    }

    def rank(name: str) -> tuple[float, float]:
        return seen[name]["validation_accuracy"], -seen[name]["validation_log_loss"]

    chosen = max(("retrain", "keep"), key=rank)  # a tie keeps the retrained head
    head, log = (retrained[0], retrained[1]) if chosen == "retrain" else (kept, kept_log)
    log.notes.append(f"finetune_head='best' chose the {chosen} head on the validation images")
    return head, log, {"chosen": chosen, **seen}

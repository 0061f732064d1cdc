"""A few trained heads of different seeds, averaged inside one head (deep ensembles).

One trained head is one draw: its initial weights, batch order, augmented views and validation
split come from the seed, and on a few hundred images two draws judge a few parts differently
(a retrained magnetic_tile station: early-stopped at epoch 14 in one retraining, 19 in the next,
temperatures 0.98 and 1.19). Averaging the logits of ``k`` heads trained from seeds ``seed``,
``seed + 1``, ... (Lakshminarayanan et al. 2017) makes the result depend less on any one draw;
the temperature is then fitted once, on the averaged logits. Same data and seed, same ensemble.

The average is taken over logits (a geometric mean of the probabilities), for the segmentation
cells and the image classes alike; :class:`HeadEnsemble` has :class:`DefectHead`'s interface, so
the exported graph, the fused score and the runtime read it as one head.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from flawscope.features.cache import FeatureBank
from flawscope.models.heads import DefectHead
from flawscope.models.training import (
    Progress,
    TrainConfig,
    TrainLog,
    calibrate_head,
    loss_weights,
    train_head,
    weigh_good,
)


class HeadEnsemble(nn.Module):
    """``k`` :class:`DefectHead` s on the same features; their logits averaged.

    Args:
        members: the trained heads (same shapes).
    """

    def __init__(self, members: list[DefectHead]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one head")
        self.members = nn.ModuleList(members)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(B, C, h, w)`` to ``(mean seg logits (B, S, h, w) or None, mean class logits (B, K))``."""
        segs: list[torch.Tensor] = []
        logits: list[torch.Tensor] = []
        for member in self.members:
            seg, out = member(features)
            if seg is not None:
                segs.append(seg)
            logits.append(out)
        mean_seg = torch.stack(segs).mean(dim=0) if segs else None
        return mean_seg, torch.stack(logits).mean(dim=0)


def member_count(state: dict[str, torch.Tensor]) -> int:
    """Heads in a saved head state: 0 for a single :class:`DefectHead`, else the ensemble's size."""
    found = {int(k.split(".")[1]) for k in state if k.startswith("members.")}
    return max(found) + 1 if found else 0


def train_ensemble(
    make_head: Callable[[], DefectHead],
    members: int,
    bank: FeatureBank,
    train_rows: np.ndarray,
    validation_rows: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    synthetic_class: int | None = None,
    progress: Progress | None = None,
    soft: np.ndarray | None = None,
) -> tuple[nn.Module, TrainLog]:
    """Train ``members`` heads from seeds ``config.seed + i`` and average them (1: a single head).

    Args:
        make_head: a new, untrained head (its standardisation buffers set).
        members: how many heads.
        bank: cached features and cell targets.
        train_rows: bank rows to train on.
        validation_rows: bank rows for early stopping and the temperature (may be empty).
        labels: ``(M,)`` image class index of every bank row.
        config: how each head is trained (its ``seed`` is the first head's).
        synthetic_class: image class of synthetic anomalies (``None``: none).
        progress: callback ``(stage, done, total)``.
        soft: ``(M, K)`` class probabilities the training loss learns instead of ``labels``
            (:func:`~flawscope.models.training.train_head`); ``None``: the labels.

    Returns:
        The head (a :class:`DefectHead` for one member, else a :class:`HeadEnsemble`) and the
        log: the first member's epochs and losses, every member's log under ``members``, and
        the temperature and ECE of the averaged logits.
    """
    if members <= 1:
        head = make_head()
        done = train_head(
            head, bank, train_rows, validation_rows, labels, config, synthetic_class, progress, soft
        )
        return head, done
    start = time.perf_counter()
    heads, logs = [], []
    for i in range(members):
        head = make_head()
        logs.append(
            train_head(
                head, bank, train_rows, validation_rows, labels, replace(config, seed=config.seed + i),
                synthetic_class, progress, soft,
            )
        )  # fmt: skip
        heads.append(head)
    ensemble = HeadEnsemble(heads).eval()
    first = logs[0]
    out = TrainLog(
        epochs_run=first.epochs_run,
        best_epoch=first.best_epoch,
        train_loss=first.train_loss,
        validation_loss=first.validation_loss,
        threads=first.threads,
        device=first.device,
        seed=config.seed,
        notes=list(dict.fromkeys(n for log in logs for n in log.notes)),
    )
    out.members = [log.to_dict() for log in logs]
    class_weights, seg_weights = loss_weights(heads[0], bank, train_rows, labels, synthetic_class)
    class_weights = weigh_good(class_weights, config)
    calibrate_head(
        ensemble, bank, validation_rows, labels, class_weights, seg_weights, config.seg_weight, out
    )
    out.seconds = time.perf_counter() - start
    return ensemble, out

"""The good-parts anomaly head a supervised model carries beside its trained heads (a station).

With ``anomaly="padim"`` or ``anomaly="patchcore"`` a
:class:`~flawscope.models.supervised.SupervisedModel` fits a PaDiM or a PatchCore head on the same
cached features of its good training images; the exported graph then runs the trunk once for
both, and the verdict sends unknown-looking parts to review. These functions fit, load and refit
that head; it shares the model's embedder (one trunk). With ``fine_level`` it is fitted on the
embedder's first ``coarse_channels`` only (the stride-4 level is the trained heads'), and its graph
selects those channels, so its evidence is what it was without the level.

The PatchCore head keeps a greedy coreset of ``anomaly_bank`` patches and searches it exactly
inside the graph (:class:`~flawscope.models.patchcore.NearestNeighbourHead`: one MatMul and one
ReduceMin), so the station stays one torch-free graph; its cost per part grows with the bank.
Either head gives the same ``patch_scores`` output, which the fused score, the review rule and
the calibration read alike.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from flawscope.errors import InputError
from flawscope.features.cache import FeatureBank
from flawscope.models.anomaly import AnomalyModel
from flawscope.models.base import Model, Progress

# The anomaly heads a station can carry (``anomaly``; None: none).
ANOMALY_HEADS = ("padim", "patchcore")


def new_anomaly_head(model: Model) -> AnomalyModel:
    """An unfitted anomaly head of the model's kind, with its common hyperparameters, on its trunk."""
    from flawscope.models.padim import PaDiM
    from flawscope.models.patchcore import PatchCore

    common = {k: v for k, v in model.hyperparameters().items() if k in model.config.__dataclass_fields__}
    head: AnomalyModel
    if model.params["anomaly"] == "patchcore":
        # Every good patch is a candidate and the bank is exactly ``anomaly_bank`` of them (the
        # ratio 1 leaves the bound to max_bank); the station's features are pooled on the fused
        # map, and the search runs in the graph.
        head = PatchCore(**common, coreset_ratio=1.0, max_bank=int(model.params["anomaly_bank"]),
                         search="exact", pooling="fused")  # fmt: skip
    else:
        head = PaDiM(**common)
    head.embedder_ = model._embedder()  # one trunk, shared
    return head


def anomaly_rows(score: str, good_rows: np.ndarray, val_good: np.ndarray | None) -> np.ndarray:
    """The bank rows the anomaly head is fitted on: the good training rows, and for some scores more.

    The validation images only stop the trained head early; the good-parts head has no such use
    for them, and a PaDiM fitted on fewer good parts is a weaker one (found on magnetic_tile: the
    station's head missed old defect types the live PaDiM caught). So with ``score`` ``"class"``
    or ``"map"`` the validation good rows ``val_good`` join the fit. A fused or chosen score
    standardises the head's evidence on the validation good parts, so there they stay out of it.
    """
    if score in ("class", "map") and val_good is not None:
        return np.sort(np.concatenate([good_rows, val_good]))
    return good_rows


def fit_anomaly_head(model: Model, bank: FeatureBank, good_rows: np.ndarray) -> AnomalyModel:
    """The anomaly head fitted on the bank rows of good training images.

    Raises:
        InputError: when there are no good training images.
    """
    if not len(good_rows):
        raise InputError("anomaly", "an anomaly head needs good training images, and there are none")
    head = new_anomaly_head(model)
    coarse = anomaly_channels(model)

    def batches() -> Iterator[tuple[torch.Tensor, np.ndarray]]:
        for start in range(0, len(good_rows), 32):
            index = torch.from_numpy(good_rows[start : start + 32])
            yield bank.features[index, :coarse].float(), bank.valid[index].numpy()

    head._fit_features(batches(), len(good_rows), None)
    head.preprocessing_ = model.preprocessing_
    return head


def load_anomaly_head(model: Model, tensors: dict[str, torch.Tensor]) -> AnomalyModel:
    """The anomaly head restored from a supervised model's saved tensors (those prefixed ``anomaly.``)."""
    head = new_anomaly_head(model)
    head.load_state_tensors(
        {k.removeprefix("anomaly."): v for k, v in tensors.items() if k.startswith("anomaly.")}
    )
    return head


def refit_anomaly_head(
    model: Model,
    found: AnomalyModel,
    images: Sequence[np.ndarray],
    extract: Callable[[np.ndarray], torch.Tensor],
    progress: Progress | None = None,
) -> AnomalyModel:
    """A copy of ``found`` whose state is re-learnt on another extractor's features (INT8)."""
    anomaly = copy.copy(found)
    anomaly.preprocessing_ = model.preprocessing_
    anomaly.embedder_ = model._embedder()
    coarse = anomaly_channels(model)
    anomaly.fit_head(images, lambda batch: extract(batch)[:, :coarse], progress)
    return anomaly


def anomaly_channels(model: Model) -> int:
    """How many of the model's feature channels its anomaly head reads (the first ones)."""
    return model._embedder().coarse_channels


class FirstChannels(nn.Module):
    """``(B, C, h, w)`` to ``module``'s output on the first ``channels`` channels (a Slice in the graph)."""

    def __init__(self, module: nn.Module, channels: int):
        super().__init__()
        self.module = module
        self.channels = channels

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out: torch.Tensor = self.module(features[:, : self.channels])
        return out


def anomaly_module(model: Model, found: Any) -> nn.Module:
    """The anomaly head's graph module on the model's features (all its channels).

    PaDiM's head selects its channels itself; PatchCore's compares every channel it is given, so
    with ``fine_level`` it is given the coarse ones only.
    """
    from flawscope.models.patchcore import PatchCore

    head: nn.Module = found.head()
    coarse = anomaly_channels(model)
    if isinstance(found, PatchCore) and model._embedder().channels != coarse:
        return FirstChannels(head, coarse)
    return head

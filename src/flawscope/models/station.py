"""The good-parts anomaly head a supervised model carries beside its trained heads (a station).

With ``anomaly="padim"`` a :class:`~flawscope.models.supervised.SupervisedModel` fits a PaDiM head
on the same cached features of its good training images; the exported graph then runs the trunk
once for both, and the verdict sends unknown-looking parts to review. These functions fit, load
and refit that head; the PaDiM shares the model's embedder (one trunk). With ``fine_level`` it
is fitted on the embedder's first ``coarse_channels`` only (the stride-4 level is the trained
heads'), and its graph selects those channels, so its evidence is what it was without the level.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from flawscope.errors import InputError
from flawscope.features.cache import FeatureBank
from flawscope.models.base import Model, Progress

if TYPE_CHECKING:
    from flawscope.models.padim import PaDiM


def new_anomaly_head(model: Model) -> PaDiM:
    """An unfitted PaDiM with the model's common hyperparameters, on the model's trunk."""
    from flawscope.models.padim import PaDiM

    padim = PaDiM(
        **{k: v for k, v in model.hyperparameters().items() if k in model.config.__dataclass_fields__}
    )
    padim.embedder_ = model._embedder()  # one trunk, shared
    return padim


def fit_anomaly_head(model: Model, bank: FeatureBank, good_rows: np.ndarray) -> PaDiM:
    """PaDiM fitted on the bank rows of good training images.

    Raises:
        InputError: when there are no good training images.
    """
    if not len(good_rows):
        raise InputError("anomaly", "a PaDiM head needs good training images, and there are none")
    padim = new_anomaly_head(model)
    coarse = anomaly_channels(model)

    def batches() -> Iterator[tuple[torch.Tensor, np.ndarray]]:
        for start in range(0, len(good_rows), 32):
            index = torch.from_numpy(good_rows[start : start + 32])
            yield bank.features[index, :coarse].float(), bank.valid[index].numpy()

    padim._fit_features(batches(), len(good_rows), None)
    padim.preprocessing_ = model.preprocessing_
    return padim


def load_anomaly_head(model: Model, tensors: dict[str, torch.Tensor]) -> PaDiM:
    """PaDiM restored from a supervised model's saved tensors (those prefixed ``anomaly.``)."""
    padim = new_anomaly_head(model)
    padim.load_state_tensors(
        {k.removeprefix("anomaly."): v for k, v in tensors.items() if k.startswith("anomaly.")}
    )
    return padim


def refit_anomaly_head(
    model: Model,
    found: PaDiM,
    images: Sequence[np.ndarray],
    extract: Callable[[np.ndarray], torch.Tensor],
    progress: Progress | None = None,
) -> PaDiM:
    """A copy of ``found`` whose statistics are re-learnt on another extractor's features (INT8)."""
    anomaly = copy.copy(found)
    anomaly.preprocessing_ = model.preprocessing_
    anomaly.embedder_ = model._embedder()
    coarse = anomaly_channels(model)
    anomaly.fit_head(images, lambda batch: extract(batch)[:, :coarse], progress)
    return anomaly


def anomaly_channels(model: Model) -> int:
    """How many of the model's feature channels its anomaly head reads (the first ones)."""
    return model._embedder().coarse_channels

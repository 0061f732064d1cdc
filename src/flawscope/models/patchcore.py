"""PatchCore: nearest-neighbour distance to a coreset of good-part patch features.

Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from flawscope.errors import InputError
from flawscope.models.base import AnomalyModel, Embedder, Progress
from flawscope.models.coreset import greedy_coreset
from flawscope.models.registry import register

log = logging.getLogger(__name__)


class NearestNeighbourScorer(nn.Module):
    """``(B, 3, H, W)`` to ``(B, H/8, W/8)``: Euclidean distance of each patch to its nearest bank entry.

    The distance is computed as ``|q|^2 - 2 q.m + |m|^2`` so the search is one matrix product,
    which is what both torch and ONNX Runtime execute fastest on a CPU.
    """

    bank_t: torch.Tensor
    bank_sq: torch.Tensor

    def __init__(self, embedder: Embedder, bank: torch.Tensor):
        super().__init__()
        self.embedder = embedder
        self.register_buffer("bank_t", bank.T.contiguous())
        self.register_buffer("bank_sq", (bank * bank).sum(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.score_features(self.embedder(x))

    def score_features(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` embedder features to ``(B, h, w)`` nearest-neighbour distances."""
        b, _, h, w = features.shape
        queries = features.flatten(2).transpose(1, 2)  # (B, hw, C)
        d2 = (queries * queries).sum(-1, keepdim=True) - 2.0 * (queries @ self.bank_t) + self.bank_sq
        nearest = d2.min(dim=-1).values.clamp_min(0.0).sqrt()
        return nearest.reshape(b, h, w)


@register("patchcore")
class PatchCore(AnomalyModel):
    """PatchCore with a greedy coreset memory bank (see :mod:`flawscope.models.coreset`).

    Hyperparameters (besides :class:`~flawscope.models.base.ModelConfig`):
        coreset_ratio: fraction of the (valid, non-padding) training patches to keep.
        max_bank: upper bound on the bank size, which bounds memory and search time.
        max_candidates: patches randomly drawn before the coreset (bounds fit time and memory).
    """

    @classmethod
    def default_params(cls) -> dict[str, Any]:  # noqa: D102
        return {"coreset_ratio": 0.1, "max_bank": 8192, "max_candidates": 400_000}

    def check_params(self) -> None:  # noqa: D102
        ratio, bank, candidates = (self.params[k] for k in ("coreset_ratio", "max_bank", "max_candidates"))
        if not isinstance(ratio, int | float) or not 0 < ratio <= 1:
            raise InputError("coreset_ratio", f"must be in (0, 1], got {ratio!r}")
        for name, value in (("max_bank", bank), ("max_candidates", candidates)):
            if not isinstance(value, int) or value < 1:
                raise InputError(name, f"must be a whole number >= 1, got {value!r}")

    def _fit_features(
        self, batches: Iterator[tuple[torch.Tensor, np.ndarray]], n_images: int, progress: Progress | None
    ) -> None:
        chunks = []
        for features, valid in batches:
            flat = features.permute(0, 2, 3, 1)[torch.from_numpy(valid)]
            chunks.append(flat.contiguous())
        patches = torch.cat(chunks)
        del chunks
        generator = torch.Generator().manual_seed(self.config.seed)
        if patches.shape[0] > self.params["max_candidates"]:
            keep = torch.randperm(patches.shape[0], generator=generator)[: self.params["max_candidates"]]
            patches = patches[keep]
        size = min(round(patches.shape[0] * self.params["coreset_ratio"]), self.params["max_bank"])
        size = max(size, 1)
        index = greedy_coreset(
            patches,
            size,
            seed=self.config.seed,
            progress=(lambda done, total: progress("coreset", done, total)) if progress else None,
        )
        self.memory_bank_ = patches[index].contiguous()
        self.scorer_: nn.Module | None = None
        log.info("PatchCore bank: %d of %d patches", size, patches.shape[0])

    def scorer(self) -> nn.Module:  # noqa: D102
        if getattr(self, "scorer_", None) is None:
            self.scorer_ = NearestNeighbourScorer(self._embedder(), self.memory_bank_).eval()
        assert self.scorer_ is not None
        return self.scorer_

    def state_tensors(self) -> dict[str, torch.Tensor]:  # noqa: D102
        return {"memory_bank": self.memory_bank_}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:  # noqa: D102
        self.memory_bank_ = tensors["memory_bank"].float().contiguous()
        self.scorer_ = None

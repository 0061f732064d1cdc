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
from flawscope.models.base import AnomalyModel, Progress
from flawscope.models.coreset import greedy_coreset
from flawscope.models.registry import register

log = logging.getLogger(__name__)


class NearestNeighbourHead(nn.Module):
    """``(B, C, H/8, W/8)`` features to ``(B, H/8, W/8)``: distance of each patch to its nearest bank entry.

    The distance is ``|q|^2 + min_m (|m|^2 - 2 q.m)``, and ``|m|^2`` rides in the matrix product
    as an extra row of the bank against a constant 1 appended to each query, so the search is one
    MatMul and one ReduceMin: the ``(B, hw, M)`` distance matrix is written once and read once,
    which is what bounds the search on a CPU. ``|q|^2`` is added after the minimum.

    With a projection (``search_dims``), queries and bank are first centred and projected onto the
    bank's leading principal axes, and the distance is measured there: an approximation that
    costs ``k / C`` of the exact search's multiplications.
    """

    bank_aug: torch.Tensor
    centre: torch.Tensor
    projection: torch.Tensor

    def __init__(
        self,
        bank: torch.Tensor,
        centre: torch.Tensor | None = None,
        projection: torch.Tensor | None = None,
    ):
        super().__init__()
        self.projected = projection is not None
        if projection is not None:
            assert centre is not None
            self.register_buffer("centre", centre)  # (C,)
            self.register_buffer("projection", projection)  # (C, k)
            bank = (bank - centre) @ projection
        augmented = torch.cat([-2.0 * bank.T, (bank * bank).sum(1)[None, :]], dim=0)  # (k + 1, M)
        self.register_buffer("bank_aug", augmented.contiguous())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` embedder features to ``(B, h, w)`` nearest-neighbour distances."""
        b, _, h, w = features.shape
        queries = features.flatten(2).transpose(1, 2)  # (B, hw, C)
        if self.projected:
            queries = (queries - self.centre) @ self.projection  # (B, hw, k)
        augmented = torch.cat([queries, torch.ones_like(queries[:, :, :1])], dim=-1)  # (B, hw, k + 1)
        partial = (augmented @ self.bank_aug).min(dim=-1).values  # (B, hw)
        nearest = (partial + (queries * queries).sum(-1)).clamp_min(0.0).sqrt()
        return nearest.reshape(b, h, w)


def principal_axes(bank: torch.Tensor, dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre ``(C,)`` and the ``dims`` leading principal axes ``(C, dims)`` of an ``(M, C)`` bank."""
    centre = bank.double().mean(0)
    centred = bank.double() - centre
    _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    return centre.float(), vectors[:, -dims:].flip(1).float().contiguous()


@register("patchcore")
class PatchCore(AnomalyModel):
    """PatchCore with a greedy coreset memory bank (see :mod:`flawscope.models.coreset`).

    Hyperparameters (besides :class:`~flawscope.models.base.ModelConfig`):
        coreset_ratio: fraction of the (valid, non-padding) training patches to keep.
        max_bank: upper bound on the bank size, which bounds memory and search time. The default
            (2,048) keeps the search within the backbone's time at 256 px on a CPU; 8,192 is
            more accurate on some data at about three times the backbone's time (see
            benchmarks/RESULTS.md).
        max_candidates: patches randomly drawn before the coreset (bounds fit time and memory).
        search_dims: search in this many principal dimensions of the bank instead of all
            channels (approximate, cheaper); None searches exactly.
    """

    @classmethod
    def default_params(cls) -> dict[str, Any]:  # noqa: D102
        return {"coreset_ratio": 0.1, "max_bank": 2048, "max_candidates": 400_000, "search_dims": None}

    def check_params(self) -> None:  # noqa: D102
        ratio, bank, candidates = (self.params[k] for k in ("coreset_ratio", "max_bank", "max_candidates"))
        if not isinstance(ratio, int | float) or not 0 < ratio <= 1:
            raise InputError("coreset_ratio", f"must be in (0, 1], got {ratio!r}")
        for name, value in (("max_bank", bank), ("max_candidates", candidates)):
            if not isinstance(value, int) or value < 1:
                raise InputError(name, f"must be a whole number >= 1, got {value!r}")
        dims = self.params["search_dims"]
        if dims is not None and (not isinstance(dims, int) or dims < 1):
            raise InputError("search_dims", f"must be a whole number >= 1 or None, got {dims!r}")

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
        dims = self.params["search_dims"]
        self.search_axes_: tuple[torch.Tensor, torch.Tensor] | None = None
        if dims is not None and dims < self.memory_bank_.shape[1]:
            self.search_axes_ = principal_axes(self.memory_bank_, dims)
        self.head_: nn.Module | None = None
        log.info("PatchCore bank: %d of %d patches", size, patches.shape[0])

    def head(self) -> nn.Module:  # noqa: D102
        if getattr(self, "head_", None) is None:
            centre, projection = self.search_axes_ or (None, None)
            self.head_ = NearestNeighbourHead(self.memory_bank_, centre, projection).eval()
        assert self.head_ is not None
        return self.head_

    def state_tensors(self) -> dict[str, torch.Tensor]:  # noqa: D102
        tensors = {"memory_bank": self.memory_bank_}
        if self.search_axes_ is not None:
            tensors["search_centre"], tensors["search_projection"] = self.search_axes_
        return tensors

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:  # noqa: D102
        self.memory_bank_ = tensors["memory_bank"].float().contiguous()
        self.search_axes_ = None
        if "search_projection" in tensors:
            self.search_axes_ = (tensors["search_centre"].float(), tensors["search_projection"].float())
        self.head_ = None

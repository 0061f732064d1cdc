"""PaDiM: a Gaussian per feature-grid position; the score is the Mahalanobis distance.

Defard et al., "PaDiM: a Patch Distribution Modeling Framework for Anomaly Detection and
Localization", ICPR 2020.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from flawscope.models.base import AnomalyModel, Embedder, Progress
from flawscope.models.registry import register


class MahalanobisScorer(nn.Module):
    """``(B, 3, H, W)`` to ``(B, H/8, W/8)``: Mahalanobis distance to each position's Gaussian."""

    def __init__(self, embedder: Embedder, channels: torch.Tensor, mean: torch.Tensor, inv_cov: torch.Tensor):
        super().__init__()
        self.embedder = embedder
        self.register_buffer("channels", channels)
        self.register_buffer("mean", mean)  # (P, C)
        self.register_buffer("inv_cov", inv_cov)  # (P, C, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        features = self.embedder(x)
        b, _, h, w = features.shape
        features = features.index_select(1, self.channels)
        diff = features.flatten(2).permute(2, 0, 1) - self.mean[:, None, :]  # (P, B, C)
        distance = ((diff @ self.inv_cov) * diff).sum(-1).clamp_min(0.0).sqrt()  # (P, B)
        return distance.transpose(0, 1).reshape(b, h, w)


@register("padim")
class PaDiM(AnomalyModel):
    """PaDiM with streaming (memory-bounded) estimation of the per-position covariances.

    Hyperparameters (besides :class:`~flawscope.models.base.ModelConfig`):
        n_features: number of randomly chosen channels kept (None: all).
        epsilon: ridge added to each covariance's diagonal.
    """

    @classmethod
    def default_params(cls) -> dict[str, Any]:  # noqa: D102
        return {"n_features": None, "epsilon": 0.01}

    def _fit_features(
        self, batches: Iterator[tuple[torch.Tensor, np.ndarray]], n_images: int, progress: Progress | None
    ) -> None:
        total = 0
        mean_sum = outer_sum = None
        channels = None
        for features, _ in batches:
            if channels is None:
                c = features.shape[1]
                n = self.params["n_features"]
                if n is None or n >= c:
                    channels = torch.arange(c)
                else:
                    generator = torch.Generator().manual_seed(self.config.seed)
                    channels = torch.sort(torch.randperm(c, generator=generator)[:n]).values
            f = features.index_select(1, channels).flatten(2).double()  # (B, C, P)
            if mean_sum is None:
                mean_sum = f.sum(0)
                outer_sum = torch.einsum("bcp,bdp->pcd", f, f)
            else:
                assert outer_sum is not None
                mean_sum += f.sum(0)
                outer_sum += torch.einsum("bcp,bdp->pcd", f, f)
            total += f.shape[0]
        assert mean_sum is not None and outer_sum is not None and channels is not None
        mean = (mean_sum / total).T.contiguous()  # (P, C)
        cov = outer_sum / total - mean[:, :, None] * mean[:, None, :]
        if total > 1:
            cov *= total / (total - 1)
        cov += self.params["epsilon"] * torch.eye(cov.shape[-1], dtype=cov.dtype)
        self.channels_ = channels
        self.mean_ = mean.float()
        # numpy's batched inverse: torch's MKL batched LU fails on thousands of small matrices.
        self.inv_cov_ = torch.from_numpy(np.linalg.inv(cov.numpy())).float().contiguous()
        self.scorer_: nn.Module | None = None

    def scorer(self) -> nn.Module:  # noqa: D102
        if getattr(self, "scorer_", None) is None:
            self.scorer_ = MahalanobisScorer(self._embedder(), self.channels_, self.mean_, self.inv_cov_).eval()
        assert self.scorer_ is not None
        return self.scorer_

    def state_tensors(self) -> dict[str, torch.Tensor]:  # noqa: D102
        return {"channels": self.channels_, "mean": self.mean_, "inv_cov": self.inv_cov_}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:  # noqa: D102
        self.channels_ = tensors["channels"].long()
        self.mean_ = tensors["mean"].float()
        self.inv_cov_ = tensors["inv_cov"].float().contiguous()
        self.scorer_ = None

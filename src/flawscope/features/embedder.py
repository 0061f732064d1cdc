"""The shared trunk's features: a backbone's stride-8 and stride-16 maps fused on one grid.

Every model reads the same :class:`Embedder` output, so one trunk pass feeds every head of a
station (:class:`~flawscope.models.base.Scorer`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The feature grid's stride in input pixels: every head's maps are on this grid.
STRIDE = 8


class Embedder(nn.Module):
    """Backbone plus multi-scale fusion: ``(B, 3, H, W)`` to ``(B, C8 + C16, H/8, W/8)``.

    The stride-16 map is upsampled to stride 8 and concatenated; a ``aggregate`` x ``aggregate``
    average pool then gives each cell its neighbourhood's context, as in PatchCore. With
    ``per_level`` each level is pooled on its own grid before the upsampling (what PatchCore's
    authors and anomalib do), so the stride-16 level averages a neighbourhood twice as wide.
    """

    def __init__(self, backbone: nn.Module, aggregate: int, per_level: bool = False):
        super().__init__()
        self.backbone = backbone
        self.aggregate = aggregate
        self.per_level = per_level
        self.channels = int(sum(backbone.channels))  # type: ignore[arg-type]

    def _pool(self, features: torch.Tensor) -> torch.Tensor:
        if self.aggregate <= 1:
            return features
        return F.avg_pool2d(
            features, self.aggregate, stride=1, padding=self.aggregate // 2, count_include_pad=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        f8, f16 = self.backbone(x)
        if self.per_level:
            f8, f16 = self._pool(f8), self._pool(f16)
        f16 = F.interpolate(f16, size=f8.shape[-2:], mode="bilinear", align_corners=False)
        features = torch.cat([f8, f16], dim=1)
        return features if self.per_level else self._pool(features)

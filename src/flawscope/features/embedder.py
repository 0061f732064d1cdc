"""The shared trunk's features: a backbone's stride-8 and stride-16 maps fused on one grid.

Every model reads the same :class:`Embedder` output, so one trunk pass feeds every head of a
station (:class:`~flawscope.models.base.Scorer`). With ``fine`` the stride-4 map rides along on
the same grid (models trained on labels, ``fine_level``); a good-parts head of a station reads
the first :attr:`Embedder.coarse_channels` only.
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

    With ``fine`` the backbone's stride-4 map ``(B, C4, H/4, W/4)`` is rearranged space-to-depth
    (pixel-unshuffle: each 2 x 2 block of stride-4 cells becomes ``4 * C4`` channels of its
    stride-8 cell) and appended after the pooling, so the output is
    ``(B, C8 + C16 + 4 * C4, H/8, W/8)``: the grid stays the stride-8 one, and the sub-cell
    detail reaches a head that learns from it unblurred (the neighbourhood average would smear
    exactly the small defects this level is for).

    Attributes:
        coarse_channels: ``C8 + C16``, the fused stride-8 and stride-16 channels (first).
        channels: every output channel, ``coarse_channels`` plus the fine level's.
    """

    def __init__(self, backbone: nn.Module, aggregate: int, per_level: bool = False, fine: bool = False):
        super().__init__()
        self.backbone = backbone
        self.aggregate = aggregate
        self.per_level = per_level
        self.fine = fine
        self.coarse_channels = int(sum(backbone.channels))  # type: ignore[arg-type]
        fine_channels = 4 * int(backbone.fine_channels) if fine else 0  # type: ignore[arg-type]
        self.channels = self.coarse_channels + fine_channels

    def _pool(self, features: torch.Tensor) -> torch.Tensor:
        if self.aggregate <= 1:
            return features
        return F.avg_pool2d(
            features, self.aggregate, stride=1, padding=self.aggregate // 2, count_include_pad=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.fine:
            f4, f8, f16 = self.backbone.levels(x)  # type: ignore[operator]
        else:
            f8, f16 = self.backbone(x)
        if self.per_level:
            f8, f16 = self._pool(f8), self._pool(f16)
        f16 = F.interpolate(f16, size=f8.shape[-2:], mode="bilinear", align_corners=False)
        features = torch.cat([f8, f16], dim=1)
        if not self.per_level:
            features = self._pool(features)
        if self.fine:
            features = torch.cat([features, F.pixel_unshuffle(f4, 2)], dim=1)
        return features

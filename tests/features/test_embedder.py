"""The embedder's stride-4 level (``fine``): the same grid, the finer cells' channels unpooled."""

from __future__ import annotations

import pytest
import torch

from flawscope.errors import OfflineError
from flawscope.features.backbones import load_backbone
from flawscope.features.embedder import Embedder

OFFLINE = ["efficientnet_lite0", "mobilenet_v2"]


def _backbone(name: str) -> torch.nn.Module:
    try:
        return load_backbone(name)
    except OfflineError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("name", OFFLINE)
def test_levels_give_the_stride_4_map_and_the_same_two_maps_as_forward(name):
    backbone = _backbone(name)
    x = torch.rand(2, 3, 64, 96)
    f4, f8, f16 = backbone.levels(x)
    assert f4.shape == (2, backbone.fine_channels, 16, 24)
    plain8, plain16 = backbone(x)
    torch.testing.assert_close(f8, plain8, rtol=0, atol=0)
    torch.testing.assert_close(f16, plain16, rtol=0, atol=0)


@pytest.mark.parametrize("name", OFFLINE)
def test_the_fine_level_appends_each_cells_2x2_stride_4_cells_unpooled(name):
    backbone = _backbone(name)
    x = torch.rand(2, 3, 64, 96)
    plain = Embedder(backbone, aggregate=3)(x)
    fine_embedder = Embedder(backbone, aggregate=3, fine=True)
    fine = fine_embedder(x)
    c4 = backbone.fine_channels
    assert fine_embedder.coarse_channels == plain.shape[1] == Embedder(backbone, 3).channels
    assert fine.shape == (2, plain.shape[1] + 4 * c4, 8, 12) and fine_embedder.channels == fine.shape[1]
    # The first channels are the plain features, pooled as before: a good-parts head reads them.
    torch.testing.assert_close(fine[:, : plain.shape[1]], plain, rtol=0, atol=0)
    # Channel c * 4 + 2 * dy + dx of cell (i, j) is stride-4 cell (2i + dy, 2j + dx) of channel c,
    # untouched by the neighbourhood pooling.
    f4 = backbone.levels(x)[0]
    extra = fine[:, plain.shape[1] :].reshape(2, c4, 2, 2, 8, 12)
    for dy in (0, 1):
        for dx in (0, 1):
            torch.testing.assert_close(extra[:, :, dy, dx], f4[:, :, dy::2, dx::2], rtol=0, atol=0)

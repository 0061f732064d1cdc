"""Bilinear upsampling: torch's own in torch, two matrix products in an exported graph, same values."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flawscope.export.graph import clean_graph
from flawscope.features.upsample import linear_weights, upsample_bilinear
from flawscope.models.engine import ort_session, trace_to_onnx

# (input, output) lengths: the heads' 4x (32 -> 8 -> 32), a box head's ceil-mode coarse map
# (9 cells back to 35), shrinking, one cell, and the same length
SIZES = [(8, 32), (9, 35), (3, 10), (1, 5), (5, 5), (7, 4)]


def _reference(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@pytest.mark.parametrize(("n_in", "n_out"), SIZES)
def test_the_weights_reproduce_torchs_bilinear_rule(n_in, n_out):
    weights = linear_weights(n_in, n_out)
    assert weights.shape == (n_in, n_out)
    # each output cell is a convex mix of input cells
    np.testing.assert_allclose(weights.sum(axis=0), 1.0, atol=1e-6)
    assert weights.min() >= 0.0
    x = torch.randn(2, 3, n_in, 6)
    rows = torch.from_numpy(weights.T.copy())
    cols = torch.from_numpy(linear_weights(6, 13))
    torch.testing.assert_close(rows @ x @ cols, _reference(x, (n_out, 13)), rtol=0, atol=1e-5)


def test_in_torch_it_is_torchs_interpolation_to_the_bit():
    x = torch.randn(2, 4, 8, 9)
    torch.testing.assert_close(upsample_bilinear(x, (32, 35)), _reference(x, (32, 35)), rtol=0, atol=0)


class _Coarse(nn.Module):
    """A head's coarse branch: pooled 4x, upsampled back to the input grid."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coarse = F.avg_pool2d(x, 4, ceil_mode=True)
        return x + upsample_bilinear(coarse, x.shape[-2:])


@pytest.mark.parametrize(("height", "width"), [(32, 32), (33, 35)])
def test_an_exported_graph_has_no_resize_and_gives_torchs_values(height, width):
    graph = clean_graph(trace_to_onnx(_Coarse(), height, width, "out", channels=3, input_name="x"))
    ops = {node.op_type for node in onnx.load_from_string(graph).graph.node}
    assert "Resize" not in ops
    assert "MatMul" in ops
    x = torch.randn(5, 3, height, width)  # a batch other than the traced one
    got = ort_session(graph).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, _Coarse()(x).numpy(), rtol=0, atol=1e-5)

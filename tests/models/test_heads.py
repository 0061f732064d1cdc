"""The defect probability of a cell: a softmax in torch, the same function without one in a graph."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from torch import nn

from flawscope.export.graph import clean_graph
from flawscope.models.engine import ort_session, trace_to_onnx
from flawscope.models.heads import defect_log_odds, defect_probability


class _Probability(nn.Module):
    def forward(self, seg: torch.Tensor) -> torch.Tensor:
        return defect_probability(seg)


def _exported() -> bytes:
    return clean_graph(trace_to_onnx(_Probability(), 6, 7, "p", channels=4, input_name="seg"))


def test_torch_keeps_the_softmax_so_training_is_unchanged():
    seg = torch.randn(3, 4, 6, 7)
    expected = 1.0 - torch.softmax(seg, dim=1)[:, 0]
    torch.testing.assert_close(defect_probability(seg), expected, rtol=0, atol=0)


def test_the_exported_probability_has_no_softmax_and_equals_torchs():
    graph = _exported()
    assert "Softmax" not in {node.op_type for node in onnx.load_from_string(graph).graph.node}
    seg = torch.randn(5, 4, 6, 7) * 4
    got = ort_session(graph).run(None, {"seg": seg.numpy()})[0]
    np.testing.assert_allclose(got, defect_probability(seg).numpy(), rtol=0, atol=1e-6)


def test_extreme_logits_give_finite_probabilities_at_the_right_ends():
    seg = torch.zeros(1, 4, 6, 7)
    seg[0, 0, 0, 0] = 200.0  # certainly background
    seg[0, 2, 0, 1] = 200.0  # certainly a defect: exp(200) overflows float32 to infinity
    seg[0, 0, 0, 2] = -300.0  # background logit far below: the same overflow
    seg[0, :, 0, 3] = torch.tensor([-1e4, 1e4, 0.0, 0.0])
    got = ort_session(_exported()).run(None, {"seg": seg.numpy()})[0]
    assert np.isfinite(got).all()
    assert got.min() >= 0.0 and got.max() <= 1.0
    assert got[0, 0, 0] == 0.0
    assert got[0, 0, 1] == 1.0 and got[0, 0, 2] == 1.0 and got[0, 0, 3] == 1.0
    # the other cells: all four classes equal, so a defect three times in four
    np.testing.assert_allclose(got[0, 1:], 0.75, atol=1e-7)
    # and the log-odds agree with the probability where both are finite
    odds = defect_log_odds(seg)[0, 1:]
    np.testing.assert_allclose(torch.sigmoid(odds).numpy(), got[0, 1:], atol=1e-6)

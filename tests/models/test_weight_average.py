"""The moving average of weights (``finetune_ema``): its arithmetic and the swap in and out."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flawscope.models.weight_average import WeightAverage


def test_the_average_is_the_mean_first_then_the_exponential_average():
    w = nn.Parameter(torch.zeros(3))
    average = WeightAverage({"w": w}, decay=0.6)
    steps = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 0.0, -1.0]), torch.tensor([5.0, 5.0, 5.0])]
    for value in steps:
        with torch.no_grad():
            w.copy_(value)
        average.update()
    # step 1: d = 0 (the start drops out); step 2: d = 1/2 (the mean); step 3: d = min(0.6, 2/3) = 0.6
    expected = 0.6 * (0.5 * steps[0] + 0.5 * steps[1]) + 0.4 * steps[2]
    torch.testing.assert_close(average.average["w"], expected)
    assert torch.equal(w.detach(), steps[2])


def test_swapped_puts_the_average_in_and_the_live_weights_back():
    layer = nn.BatchNorm1d(2)
    live = {**dict(layer.named_parameters()), **dict(layer.named_buffers())}
    average = WeightAverage(live, decay=0.9)
    assert "num_batches_tracked" not in average.live  # integer buffers stay live
    layer.train()
    layer(torch.randn(8, 2) + 3.0)  # moves the running mean
    average.update()  # the first step: the average is this step's tensors
    moved = layer.running_mean.clone()
    layer(torch.randn(8, 2) - 3.0)
    live_mean = layer.running_mean.clone()
    with average.swapped():
        assert torch.equal(layer.running_mean, moved)
    assert torch.equal(layer.running_mean, live_mean)


def test_a_decay_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="decay"):
        WeightAverage({"w": torch.zeros(1)}, decay=1.0)

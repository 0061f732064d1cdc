"""An exponential moving average of weights during fine-tuning (``finetune_ema``, issue 13).

The weights of one fine-tuning step are a noisy point on the training trajectory; ELPV's
validation accuracy swung by several cells from one fine-tuning epoch to the next. An average of
the weights over the last steps (Polyak averaging, as timm's ``ModelEmaV2``) is usually a
better model than any single point of them, at no cost at prediction time: the graph is the
same, only its weights differ.

After step ``t`` (1, 2, ...) every averaged tensor becomes ``d_t * average + (1 - d_t) * live``
with ``d_t = min(decay, (t - 1) / t)``: the plain mean of the steps so far until ``t`` reaches
``1 / (1 - decay)``, the exponential average after that. So the starting weights (the ImageNet
trunk, a fresh head) drop out after the first step instead of fading only as ``decay ** t``,
and ``decay`` alone sets the window (about ``1 / (1 - decay)`` steps).

Which tensors: the parameters being trained and the floating-point buffers that move with
them (the temporary head's batch-norm running statistics, averaged like timm's, since they were
measured on the live weights' activations); the trunk's batch norm keeps its ImageNet statistics
during fine-tuning, so its buffers are not averaged (they do not move). Integer buffers (batch
counts) are left live.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch


class WeightAverage:
    """The exponential moving average of some live tensors (see the module docstring).

    Args:
        live: the tensors to average, by name: the modules' own parameters and buffers (they are
            read after each step and, inside :meth:`swapped`, overwritten in place).
        decay: the average's decay per step, in (0, 1).
    """

    def __init__(self, live: Mapping[str, torch.Tensor], decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay!r}")
        self.live = {k: v for k, v in live.items() if v.is_floating_point()}
        self.decay = decay
        self.steps = 0
        self.average = {k: v.detach().clone() for k, v in self.live.items()}

    def update(self) -> None:
        """Fold the live tensors of one more step into the average."""
        self.steps += 1
        d = min(self.decay, (self.steps - 1) / self.steps)
        with torch.no_grad():
            for name, value in self.live.items():
                self.average[name].mul_(d).add_(value.detach(), alpha=1.0 - d)

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Inside: the live tensors hold the average (to judge it, keep it); after: their own values.

        The tensors are copied in place, so an optimiser holding them is undisturbed.
        """
        saved = {k: v.detach().clone() for k, v in self.live.items()}
        with torch.no_grad():
            for name, value in self.live.items():
                value.copy_(self.average[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, value in self.live.items():
                    value.copy_(saved[name])

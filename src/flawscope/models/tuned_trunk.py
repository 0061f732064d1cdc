"""The trunk's tunable part and its cached input, shared by every fine-tuning (issue 13).

Fine-tuning trains the EfficientNet-Lite trunk's stride-16 blocks (``"last"``) or every weight
(``"full"``) in place. What the classifier's (:mod:`flawscope.models.finetune`) and the box
detector's (:mod:`flawscope.models.finetune_boxes`) loops share lives here: which tensors a mode
trains (and saving / loading them), the frozen part below the tuned blocks and the cache of its
output, the tuned part run from that cache, and the keeper of the best epoch's weights.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flawscope.data.preprocess import Preprocessing, to_batch
from flawscope.errors import InputError
from flawscope.features.nets import LiteTrunk

Progress = Callable[[str, int, int], None]


def check_trunk(trunk: nn.Module, backbone: str) -> LiteTrunk:
    """The trunk as a :class:`LiteTrunk`, or an error naming the backbone."""
    if not isinstance(trunk, LiteTrunk):
        raise InputError(
            "finetune",
            f"fine-tuning is implemented for the EfficientNet-Lite trunks, not {backbone!r}; "
            "choose an efficientnet_lite backbone or finetune='none'",
        )
    return trunk


def tuned_prefixes(trunk: LiteTrunk, mode: str) -> tuple[str, ...]:
    """State-dict name prefixes of the trunk weights ``mode`` trains."""
    if mode == "full":
        return ("",)
    return tuple(f"_blocks.{i}." for i in range(trunk.tap8 + 1, len(trunk._blocks)))


def tuned_state(trunk: LiteTrunk, mode: str) -> dict[str, torch.Tensor]:
    """The trunk tensors ``mode`` trains (parameters and their batch-norm buffers), by name."""
    prefixes = tuned_prefixes(trunk, mode)
    return {k: v.detach().clone() for k, v in trunk.state_dict().items() if k.startswith(prefixes)}


class EpochKeeper:
    """The tuned trunk weights and the head of the best epoch so far, put back when tuning ends.

    Args:
        trunk: the trunk being tuned (in place).
        head: the temporary head trained with it.
        mode: which trunk weights are tuned (:data:`FINETUNE_MODES`).
        patience: :meth:`miss` says stop after this many epochs in a row without a better one
            (0: never).
    """

    def __init__(self, trunk: LiteTrunk, head: nn.Module, mode: str, patience: int) -> None:
        self.trunk, self.head, self.mode, self.patience = trunk, head, mode, patience
        self.keep(0)

    def keep(self, epoch: int) -> None:
        """This epoch is the best so far: remember its weights."""
        self.best_epoch, self.stale = epoch, 0
        self._trunk = tuned_state(self.trunk, self.mode)
        self._head = copy.deepcopy(self.head.state_dict())

    def miss(self) -> bool:
        """This epoch was not better; True when patience has run out."""
        self.stale += 1
        return bool(self.patience) and self.stale >= self.patience

    def restore(self) -> None:
        """Put the best epoch's weights back, freeze the trunk again, both in evaluation mode."""
        self.trunk.load_state_dict(self._trunk, strict=False)
        for p in self.trunk.parameters():
            p.requires_grad_(False)
        self.trunk.eval()
        self.head.load_state_dict(self._head)
        self.head.eval()


class Stride8(nn.Module):
    """The frozen part below the tuned blocks: ``(B, 3, H, W)`` to the stride-8 map."""

    def __init__(self, trunk: LiteTrunk):
        super().__init__()
        self.trunk = trunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` image batch to ``(B, C8, H/8, W/8)`` features."""
        x = F.relu6(self.trunk._bn0(self.trunk._conv_stem(x)))
        for block in self.trunk._blocks[: self.trunk.tap8 + 1]:
            x = block(x)
        return x


class TunedPart(nn.Module):
    """Cached input (the stride-8 map, or the image for ``"full"``) to the trunk's two maps."""

    def __init__(self, trunk: LiteTrunk, mode: str):
        super().__init__()
        self.trunk = trunk
        self.mode = mode
        self.channels = trunk.channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C8, h, w)`` cached maps (or ``(B, 3, H, W)`` images) to the stride-8 and -16 maps."""
        if self.mode == "full":
            out: tuple[torch.Tensor, torch.Tensor] = self.trunk(x)
            return out
        f8 = x
        for block in self.trunk._blocks[self.trunk.tap8 + 1 :]:
            x = block(x)
        return f8, x


def cache_inputs(
    images: Sequence[np.ndarray],
    pre: Preprocessing,
    prefix: Callable[[np.ndarray], torch.Tensor] | None,
    progress: Progress | None,
) -> torch.Tensor:
    """``(N, C, h, w)`` float16 inputs of the tuned part: the stride-8 maps, or the canvases."""
    parts = []
    for start in range(0, len(images), 16):
        batch, _ = to_batch(list(images[start : start + 16]), pre)
        out = torch.from_numpy(batch) if prefix is None else prefix(batch)
        parts.append(out.to(torch.float16))
        if progress is not None:
            progress("fine-tuning cache", min(start + 16, len(images)), len(images))
    return torch.cat(parts)


def load_tuned(trunk: nn.Module, tensors: dict[str, torch.Tensor], backbone: str) -> None:
    """Put saved ``trunk.*`` tensors (names without the prefix) into a freshly loaded trunk.

    Raises:
        InputError: when a name is not a tensor of this trunk (a bundle from another backbone).
    """
    own = trunk.state_dict()
    unknown = [k for k in tensors if k not in own or tuple(own[k].shape) != tuple(tensors[k].shape)]
    if unknown:
        raise InputError(
            "trunk", f"{len(unknown)} tuned tensors do not fit backbone {backbone!r}, e.g. {unknown[:2]}"
        )
    trunk.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()}, strict=False)
    trunk.eval()

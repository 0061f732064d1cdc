"""Compact, export-friendly trunks of EfficientNet-Lite and MobileNetV2 (pure torch).

Module names follow the packaged checkpoints' keys so the ImageNet weights load with
``load_state_dict``. Only the layers up to stride 16 are built: the head is never needed for
anomaly features, and leaving it out saves a third of the compute.

EfficientNet-Lite was trained in TensorFlow with "same" padding, which pads asymmetrically for
stride-2 convolutions. The canvas is always a multiple of 32, so that padding is a constant here
and is applied with a static ``F.pad``, which exports to ONNX without shape arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def _same_pad(kernel: int, stride: int) -> tuple[int, int, int, int]:
    # For an even input size i and stride s: total = max((ceil(i/s) - 1) * s + k - i, 0).
    total = max(kernel - stride, 0) if stride > 1 else kernel - 1
    before = total // 2
    return (before, total - before, before, total - before)


class SameConv(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding for even input sizes."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = False
    ):
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=bias)
        self.pad = _same_pad(kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return super().forward(F.pad(x, self.pad))


class MBConv(nn.Module):
    """EfficientNet-Lite inverted bottleneck without squeeze-excitation, ReLU6."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, eps: float):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=eps)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=eps)
        self._project_conv = SameConv(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=eps)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = x
        if self.expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


@dataclass(frozen=True)
class Stage:
    """One stage of blocks: expansion, kernel, stride of the first block, output channels, repeats."""

    expand: int
    kernel: int
    stride: int
    channels: int
    repeats: int


# Stages 1-5 (stride 16) of EfficientNet-Lite, with widths/depths already scaled per variant.
LITE_STAGES: dict[str, tuple[Stage, ...]] = {
    "efficientnet_lite0": (
        Stage(1, 3, 1, 16, 1),
        Stage(6, 3, 2, 24, 2),
        Stage(6, 5, 2, 40, 2),
        Stage(6, 3, 2, 80, 3),
        Stage(6, 5, 1, 112, 3),
    ),
    "efficientnet_lite1": (
        Stage(1, 3, 1, 16, 1),
        Stage(6, 3, 2, 24, 3),
        Stage(6, 5, 2, 40, 3),
        Stage(6, 3, 2, 80, 4),
        Stage(6, 5, 1, 112, 4),
    ),
    "efficientnet_lite2": (
        Stage(1, 3, 1, 16, 1),
        Stage(6, 3, 2, 24, 3),
        Stage(6, 5, 2, 48, 3),
        Stage(6, 3, 2, 88, 4),
        Stage(6, 5, 1, 120, 4),
    ),
}


class LiteTrunk(nn.Module):
    """EfficientNet-Lite up to stride 16, returning the stride-8 and stride-16 feature maps.

    Input ``(B, 3, H, W)`` with H, W multiples of 32; outputs ``(B, C8, H/8, W/8)`` and
    ``(B, C16, H/16, W/16)``; :meth:`levels` also gives the stride-4 map ``(B, C4, H/4, W/4)``
    (``fine_channels`` = C4).
    """

    def __init__(self, variant: str):
        super().__init__()
        stages = LITE_STAGES[variant]
        eps = 1e-3
        self._conv_stem = SameConv(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=eps)
        blocks: list[nn.Module] = []
        cin = 32
        self.tap4 = self.tap8 = -1
        for index, stage in enumerate(stages):
            for r in range(stage.repeats):
                blocks.append(
                    MBConv(
                        cin, stage.channels, stage.expand, stage.kernel, stage.stride if r == 0 else 1, eps
                    )
                )
                cin = stage.channels
            if index == 1:
                self.tap4 = len(blocks) - 1
            if index == 2:
                self.tap8 = len(blocks) - 1
        self._blocks = nn.ModuleList(blocks)
        self.channels = (stages[2].channels, stages[4].channels)
        self.fine_channels = stages[1].channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        _, f8, f16 = self.levels(x)
        return f8, f16

    def levels(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The stride-4, stride-8 and stride-16 maps of ``(B, 3, H, W)``, from one pass."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        f4 = f8 = x
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i == self.tap4:
                f4 = x
            if i == self.tap8:
                f8 = x
        return f4, f8, x


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]


class InvertedResidual(nn.Module):
    """MobileNetV2 block with the flat ``conv.N`` layout of the packaged checkpoint."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [*_conv_bn(cin, mid, 1, 1), nn.ReLU6(inplace=True)]
        layers += [*_conv_bn(mid, mid, 3, stride, groups=mid), nn.ReLU6(inplace=True)]
        layers += _conv_bn(mid, cout, 1, 1)
        self.conv = nn.Sequential(*layers)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x + self.conv(x) if self.skip else self.conv(x)


class MobileNetV2Trunk(nn.Module):
    """MobileNetV2 (width 1.0) up to stride 16: ``features.0`` to ``features.13``.

    Returns the stride-8 map (32 channels, after ``features.6``) and the stride-16 map
    (96 channels, after ``features.13``); :meth:`levels` also the stride-4 map (24 channels,
    after ``features.3``).
    """

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(*_conv_bn(3, 32, 3, 2), nn.ReLU6(inplace=True))]
        cin = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.features = nn.Sequential(*layers)
        self.channels = (32, 96)
        self.fine_channels = 24

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        _, f8, f16 = self.levels(x)
        return f8, f16

    def levels(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The stride-4, stride-8 and stride-16 maps of ``(B, 3, H, W)``, from one pass."""
        f4 = self.features[:4](x)
        f8 = self.features[4:7](f4)
        return f4, f8, self.features[7:](f8)

"""Bilinear upsampling that exports to ONNX as two small matrix products.

``F.interpolate(..., mode="bilinear", align_corners=False)`` exports as an ONNX ``Resize``,
which ONNX Runtime's CPU kernel runs several times slower on small feature maps than the same
map computed as two matrix products (a head's coarse branch; benchmarks/RESULTS.md, "The
combined station", the twelfth session's update). Bilinear interpolation is separable, one linear
map per axis, so in an exported graph :func:`upsample_bilinear` applies those two maps as constant
matrices; in torch (training, prediction) it calls ``F.interpolate`` itself, so trained weights
and torch outputs are unchanged to the bit.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def linear_weights(n_in: int, n_out: int) -> np.ndarray:
    """``(n_in, n_out)``: how much each input cell contributes to each output cell.

    PyTorch's rule for ``align_corners=False`` with an output size: output cell ``o`` reads
    the source position ``(o + 0.5) * n_in / n_out - 0.5``, clamped at 0, between its two
    neighbouring input cells (the upper one clamped at ``n_in - 1``).
    """
    weights = np.zeros((n_in, n_out), dtype=np.float64)
    scale = n_in / n_out
    for o in range(n_out):
        source = max((o + 0.5) * scale - 0.5, 0.0)
        low = min(int(np.floor(source)), n_in - 1)
        high = min(low + 1, n_in - 1)
        share = source - low
        weights[low, o] += 1.0 - share
        weights[high, o] += share
    return weights.astype(np.float32)


def upsample_bilinear(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``(B, C, h, w)`` to ``(B, C, *size)``, bilinear, ``align_corners=False``.

    Args:
        x: the map to upsample.
        size: output ``(height, width)``; fixed in an exported graph (its canvas is fixed).
    """
    if not torch.onnx.is_in_onnx_export():
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    with warnings.catch_warnings():
        # The tracer warns that the sizes and matrices become constants of the graph: they
        # should, since an exported graph's canvas is fixed (only its batch axis is dynamic).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        height, width = int(size[0]), int(size[1])
        rows = torch.from_numpy(linear_weights(int(x.shape[-2]), height).T.copy())  # (height, h)
        cols = torch.from_numpy(linear_weights(int(x.shape[-1]), width))  # (w, width)
    return torch.matmul(torch.matmul(rows, x), cols)

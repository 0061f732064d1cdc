"""Synthetic anomalies in feature space for a head's training (SuperSimpleNet, Rolih et al. 2024).

Noise, in units of each channel's spread, is added to the standardised features of good parts
inside random smooth blobs; the blob's cells become defect cells and the image a defective one.
:func:`flawscope.models.training.train_head` calls :func:`add_synthetic` on its batches when a
model trains with ``synthetic`` > 0.
"""

from __future__ import annotations

import numpy as np
import torch

from flawscope.models.heads import DefectHead


def blob_mask(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random smooth blob (Perlin-like: coarse noise, upsampled, thresholded) on an ``(h, w)`` grid."""
    h, w = shape
    scale = int(rng.choice([2, 4, 8]))
    coarse = rng.standard_normal((max(2, h // scale), max(2, w // scale))).astype(np.float32)
    fine = torch.nn.functional.interpolate(
        torch.from_numpy(coarse)[None, None], size=(h, w), mode="bicubic", align_corners=False
    )[0, 0].numpy()
    mask = fine > np.quantile(fine, 1.0 - rng.uniform(0.02, 0.15))
    return np.asarray(mask)


def add_synthetic(
    head: DefectHead,
    x: torch.Tensor,
    cells: torch.Tensor,
    y: torch.Tensor,
    good: np.ndarray,
    synthetic_class: int,
    probability: float,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Turn some good images of a batch into synthetic anomalies in feature space."""
    x, cells, y = x.clone(), cells.clone(), y.clone()
    scale = 1.0 / head.inv_std.cpu()  # noise in units of each channel's spread, drawn on the CPU
    for i in np.flatnonzero(good & (rng.random(len(good)) < probability)):
        mask = torch.from_numpy(blob_mask((x.shape[2], x.shape[3]), rng))
        strength = float(rng.uniform(0.5, 2.0))
        noise = torch.randn(x.shape[1], *mask.shape) * scale[:, None, None] * strength
        x[i] += (noise * mask).to(x.device)  # drawn on the CPU: the same noise on any device
        cells[i][mask] = 1
        y[i] = synthetic_class
    return x, cells, y

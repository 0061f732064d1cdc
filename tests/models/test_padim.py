"""PaDiM's streaming Gaussian estimate equals the textbook one."""

from __future__ import annotations

import numpy as np
import torch

from flawscope.models.padim import PaDiM


def test_streaming_covariance_matches_numpy():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(23, 5, 3, 4)).astype(np.float32)  # (N, C, h, w)
    feats[:, 1] += 0.5 * feats[:, 0]  # correlated channels
    model = PaDiM(epsilon=0.01)
    batches = ((torch.from_numpy(feats[i : i + 4]), None) for i in range(0, 23, 4))
    model._fit_features(batches, 23, None)
    flat = feats.reshape(23, 5, 12)
    for p in (0, 7, 11):
        cov = np.cov(flat[:, :, p], rowvar=False) + 0.01 * np.eye(5)
        np.testing.assert_allclose(model.mean_[p].numpy(), flat[:, :, p].mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(model.inv_cov_[p].numpy(), np.linalg.inv(cov), rtol=1e-4, atol=1e-5)


def test_channel_subset_is_seeded_and_sorted():
    a = PaDiM(n_features=10, seed=3)._choose_channels(40)
    b = PaDiM(n_features=10, seed=3)._choose_channels(40)
    assert torch.equal(a, b) and len(a) == 10 and torch.all(a[1:] > a[:-1])

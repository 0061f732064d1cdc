"""PaDiM's streaming Gaussian estimate equals the textbook one."""

from __future__ import annotations

import numpy as np
import torch

from flawscope.models.padim import MahalanobisHead, PaDiM


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


def _random_gaussians(p: int, c: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    samples = rng.normal(size=(p, 3 * c, c))
    samples[:, :, 1] += 0.8 * samples[:, :, 0]
    cov = np.einsum("pnc,pnd->pcd", samples, samples) / (3 * c) + 0.01 * np.eye(c)
    return torch.from_numpy(np.linalg.inv(cov).astype(np.float32)), torch.from_numpy(
        rng.normal(size=(p, c)).astype(np.float32)
    )


def _textbook_distance(features: torch.Tensor, mean: torch.Tensor, inv_cov: torch.Tensor) -> np.ndarray:
    b, _, h, w = features.shape
    d = features.double().flatten(2).permute(2, 0, 1) - mean.double()[:, None, :]  # (P, B, C)
    squared = torch.einsum("pbc,pcd,pbd->pb", d, inv_cov.double(), d)
    return squared.sqrt().T.reshape(b, h, w).numpy()


def test_factored_scorer_equals_textbook_mahalanobis():
    c, h, w = 90, 3, 4  # 90 channels: two unequal row blocks of the Cholesky factor
    inv_cov, mean = _random_gaussians(h * w, c, seed=1)
    scorer = MahalanobisHead(c, torch.arange(c), mean, inv_cov)
    assert scorer.factored and len(scorer.starts) == 2
    stored = sum(getattr(scorer, f"block{i}").numel() for i in range(2))
    assert stored < 0.8 * inv_cov.numel()  # the zeros of the factor are not stored
    features = torch.from_numpy(np.random.default_rng(2).normal(size=(5, c, h, w)).astype(np.float32))
    np.testing.assert_allclose(
        scorer(features).numpy(), _textbook_distance(features, mean, inv_cov), rtol=1e-4
    )


def test_scorer_without_cholesky_factor_keeps_full_matrices():
    c = 6
    inv_cov, mean = _random_gaussians(4, c, seed=3)
    inv_cov[2] = -inv_cov[2]  # not positive definite: no factor exists
    scorer = MahalanobisHead(c, torch.arange(c), mean, inv_cov)
    assert not scorer.factored
    features = torch.from_numpy(np.random.default_rng(4).normal(size=(2, c, 2, 2)).astype(np.float32))
    expected = _textbook_distance(features, mean, inv_cov)
    result = scorer(features).numpy()
    ok = ~np.isnan(expected)
    np.testing.assert_allclose(result[ok], expected[ok], rtol=1e-4)

"""The IVF index: exact when every list is scanned, never below exact, rebuilt identically from its arrays."""

from __future__ import annotations

import numpy as np
import pytest

from flawscope.errors import InputError
from flawscope.search.ivf import IvfIndex, arrays_from_bytes, arrays_to_bytes, train_ivf


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 24)) * 3
    bank = (centres[rng.integers(20, size=3000)] + rng.normal(size=(3000, 24))).astype(np.float32)
    queries = (centres[rng.integers(20, size=400)] + rng.normal(size=(400, 24)) * 1.2).astype(np.float32)
    return bank, queries


def _brute(bank: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = ((queries[:, None, :].astype(np.float64) - bank[None].astype(np.float64)) ** 2).sum(-1)
    return np.sqrt(d.min(1)), d.argmin(1)


def test_scanning_every_list_is_exact_search(data):
    bank, queries = data
    arrays = train_ivf(bank, 32)
    distances, rows = IvfIndex(arrays, nprobe=32).search(queries)
    exact, nearest = _brute(bank, queries)
    np.testing.assert_allclose(distances, exact, rtol=1e-4, atol=1e-4)
    assert (rows == nearest).mean() > 0.99  # ties aside


def test_fewer_lists_only_overestimate_and_mostly_find_the_neighbour(data):
    bank, queries = data
    arrays = train_ivf(bank, 32)
    exact, nearest = _brute(bank, queries)
    recalls = []
    for nprobe in (1, 4, 16):
        distances, rows = IvfIndex(arrays, nprobe=nprobe).search(queries)
        assert np.all(distances >= exact - 1e-4)  # a nearest neighbour among fewer vectors is never nearer
        recalls.append((rows == nearest).mean())
    assert recalls[0] < recalls[2] and recalls[2] > 0.9


def test_rebuilt_from_saved_arrays_the_index_gives_identical_results(data):
    bank, queries = data
    arrays = train_ivf(bank, 16, seed=3)
    saved = arrays_to_bytes(arrays)
    again = arrays_from_bytes(saved, arrays.hashes())
    first = IvfIndex(arrays, nprobe=3).search(queries)
    second = IvfIndex(again, nprobe=3).search(queries)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_an_altered_array_is_refused(data):
    bank, _ = data
    arrays = train_ivf(bank, 16)
    hashes = arrays.hashes()
    altered = arrays_to_bytes(type(arrays)(arrays.bank + 1e-3, arrays.centroids, arrays.assign))
    with pytest.raises(InputError, match="bank"):
        arrays_from_bytes(altered, hashes)
    with pytest.raises(InputError, match="safetensors"):
        arrays_from_bytes(b"not a file", hashes)


def test_inconsistent_arrays_are_refused(data):
    bank, _ = data
    arrays = train_ivf(bank, 8)
    with pytest.raises(InputError, match="assignment"):
        IvfIndex.from_arrays(arrays.bank, arrays.centroids, arrays.assign + 8, nprobe=2)
    with pytest.raises(InputError, match="do not match"):
        IvfIndex.from_arrays(arrays.bank, arrays.centroids[:, :5], arrays.assign, nprobe=2)
    with pytest.raises(InputError, match="nprobe"):
        IvfIndex(arrays, nprobe=0)


def test_grid_search_keeps_the_layout(data):
    bank, queries = data
    index = IvfIndex(train_ivf(bank, 8), nprobe=8)
    grid = queries[:24].reshape(2, 3, 4, 24).transpose(0, 3, 1, 2)  # (B, C, h, w)
    out = index.search_grid(np.ascontiguousarray(grid))
    assert out.shape == (2, 3, 4)
    np.testing.assert_allclose(out.reshape(-1), _brute(bank, queries[:24])[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(InputError, match="channels"):
        index.search_grid(np.zeros((1, 5, 2, 2), np.float32))

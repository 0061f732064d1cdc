"""An inverted-file (IVF) nearest-neighbour index over a memory bank, rebuilt from plain arrays.

PatchCore's bank at anomalib's size (10% of the training patches, ~60,000 x 152) is too large to
search exhaustively within the backbone's time on a CPU (about 40 times the backbone here). The
IVF index files every bank vector under its nearest of ``nlist`` k-means centroids; a query
scans only the lists of its ``nprobe`` nearest centroids, with exact distances inside them. The
result is an upper bound of the exact nearest-neighbour distance (equal when the neighbour lies
in a probed list); how much that costs in accuracy is measured in ``benchmarks/RESULTS.md``.

The index is never pickled or serialised: the bundle stores the bank, the centroids and each
vector's list (safetensors), and :meth:`IvfIndex.from_arrays` rebuilds the identical faiss index
from them by filing each vector under its stored list (no re-assignment, so no float rounding
can move a vector to another list). Training-time prediction and the torch-free runtime both
search through this class, so they run the same search.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from flawscope.errors import InputError


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a core dependency
        raise InputError("search", "the IVF search needs faiss-cpu (pip install faiss-cpu)") from exc
    return faiss


def array_sha256(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes (C order): the identity of a saved index array."""
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class IvfArrays:
    """What rebuilds an index.

    Attributes:
        bank: ``(M, C)`` float32 bank vectors.
        centroids: ``(nlist, C)`` float32 coarse centroids.
        assign: ``(M,)`` int64 list of each bank vector.
    """

    bank: np.ndarray
    centroids: np.ndarray
    assign: np.ndarray

    def hashes(self) -> dict[str, str]:
        """SHA-256 of each array (:func:`array_sha256`)."""
        return {name: array_sha256(getattr(self, name)) for name in ("bank", "centroids", "assign")}


def arrays_to_bytes(arrays: IvfArrays) -> bytes:
    """The arrays as a safetensors file (``bank``, ``centroids``, ``assign``)."""
    from safetensors.numpy import save

    return bytes(
        save(
            {
                "bank": np.ascontiguousarray(arrays.bank, dtype=np.float32),
                "centroids": np.ascontiguousarray(arrays.centroids, dtype=np.float32),
                "assign": np.ascontiguousarray(arrays.assign, dtype=np.int64),
            }
        )
    )


def arrays_from_bytes(data: bytes, expected: dict[str, str] | None = None) -> IvfArrays:
    """Read :func:`arrays_to_bytes` output, checking each array's hash against ``expected``.

    Raises:
        InputError: for a file without the three arrays, or an array whose hash differs.
    """
    from safetensors.numpy import load

    try:
        tensors = load(data)
        arrays = IvfArrays(tensors["bank"], tensors["centroids"], tensors["assign"])
    except Exception as exc:  # whatever safetensors raises for a bad file
        raise InputError("search index", f"is not a bank/centroids/assign safetensors file ({exc})") from None
    if expected is not None:
        got = arrays.hashes()
        wrong = sorted(name for name in got if expected.get(name) != got[name])
        if wrong:
            names = ", ".join(wrong)
            raise InputError("search index", f"array(s) {names} do not match their recorded SHA-256")
    return arrays


def faiss_version() -> str:
    """The installed faiss version."""
    return str(_faiss().__version__)


def train_ivf(
    bank: np.ndarray, nlist: int, seed: int = 0, iterations: int = 10, threads: int = 0
) -> IvfArrays:
    """Cluster a bank into ``nlist`` lists with faiss' k-means.

    Args:
        bank: ``(M, C)`` float32 bank.
        nlist: number of lists (clipped to ``M``).
        seed: k-means seed.
        iterations: k-means iterations.
        threads: faiss threads (0: faiss' default).

    Returns:
        The arrays of the index.
    """
    faiss = _faiss()
    if threads:
        faiss.omp_set_num_threads(threads)
    bank = np.ascontiguousarray(bank, dtype=np.float32)
    nlist = max(1, min(nlist, len(bank)))
    kmeans = faiss.Kmeans(bank.shape[1], nlist, niter=iterations, seed=seed, max_points_per_centroid=256)
    kmeans.train(bank)
    centroids = np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
    quantizer = faiss.IndexFlatL2(bank.shape[1])
    quantizer.add(centroids)
    _, assign = quantizer.search(bank, 1)
    return IvfArrays(bank, centroids, assign[:, 0].astype(np.int64))


class IvfIndex:
    """A faiss ``IndexIVFFlat`` rebuilt from :class:`IvfArrays` (see the module docstring)."""

    def __init__(self, arrays: IvfArrays, nprobe: int):
        faiss = _faiss()
        bank, centroids, assign = arrays.bank, arrays.centroids, arrays.assign
        if bank.ndim != 2 or centroids.ndim != 2 or centroids.shape[1] != bank.shape[1]:
            raise InputError("search index", f"bank {bank.shape}, centroids {centroids.shape} do not match")
        in_range = not len(bank) or 0 <= assign.min() <= assign.max() < len(centroids)
        if assign.shape != (len(bank),) or not in_range:
            raise InputError("search index", "list assignment does not match the bank and centroids")
        if not isinstance(nprobe, int) or nprobe < 1:
            raise InputError("nprobe", f"must be a whole number >= 1, got {nprobe!r}")
        self.arrays = arrays
        self.dims = bank.shape[1]
        quantizer = faiss.IndexFlatL2(self.dims)
        quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
        index = faiss.IndexIVFFlat(quantizer, self.dims, len(centroids), faiss.METRIC_L2)
        index.is_trained = True
        vectors = np.ascontiguousarray(bank, dtype=np.float32)
        ids = np.arange(len(bank), dtype=np.int64)
        lists = np.ascontiguousarray(assign, dtype=np.int64)
        index.add_core(len(bank), faiss.swig_ptr(vectors), faiss.swig_ptr(ids), faiss.swig_ptr(lists))
        index.nprobe = min(nprobe, len(centroids))
        self._quantizer = quantizer  # the index keeps a raw pointer to it
        self.index = index

    @classmethod
    def from_arrays(
        cls, bank: np.ndarray, centroids: np.ndarray, assign: np.ndarray, nprobe: int
    ) -> IvfIndex:
        """Rebuild from saved arrays (any dtype convertible to float32 / int64)."""
        return cls(
            IvfArrays(
                np.asarray(bank, dtype=np.float32),
                np.asarray(centroids, dtype=np.float32),
                np.asarray(assign, dtype=np.int64),
            ),
            nprobe,
        )

    @property
    def nprobe(self) -> int:
        """Lists scanned per query."""
        return int(self.index.nprobe)

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest bank vector of each query.

        Args:
            queries: ``(Q, C)`` float32.

        Returns:
            ``(Q,)`` float32 Euclidean distances and ``(Q,)`` int64 bank rows (-1 when no probed
            list held a vector, which a bank's own centroids make impossible).
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        distances, rows = self.index.search(queries, 1)
        return np.sqrt(np.maximum(distances[:, 0], 0.0)), rows[:, 0]

    def search_grid(self, features: np.ndarray) -> np.ndarray:
        """``(B, C, h, w)`` feature maps to ``(B, h, w)`` nearest-neighbour distances."""
        b, c, h, w = features.shape
        if c != self.dims:
            raise InputError("features", f"have {c} channels; the bank has {self.dims}")
        distances, _ = self.search(features.transpose(0, 2, 3, 1).reshape(-1, c))
        return distances.reshape(b, h, w)

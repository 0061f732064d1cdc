"""Greedy k-center coreset selection (PatchCore's memory-bank subsampling), made fast on a CPU.

The textbook greedy step picks the point farthest from the selected set, then updates every
point's distance to the set: one pass over all N points per selected point. Selecting 10% of
~600,000 patches that way costs N x size x dims multiply-adds (5 x 10^12 here, an hour on two
cores). What makes it fast:

- Distances are measured on a Johnson-Lindenstrauss random projection (as anomalib does).
- Each round selects ``batch`` points at once: it runs the exact greedy steps among the
  ``candidates`` currently farthest points (the next farthest point is almost always among
  them), then updates the distances against the new points only.
- After the first ``clusters`` picks every point is filed under its nearest pick (a cluster, one
  contiguous slice of the points), and a new centre updates only the clusters it can reach. By
  the triangle inequality a point of a cluster with centre ``mu`` and radius ``r`` is at least
  ``|c - mu| - r`` from a new centre ``c``, so a cluster whose bound exceeds every current
  distance in it cannot change. In the ~100 dimensions of patch features that bound rules out
  too few clusters to pay, so by default each new centre updates only its ``reach`` clusters of
  smallest bound, and each round's candidates come from the clusters holding the largest
  distances: a point elsewhere may keep a distance that is too large and be picked where exact
  greedy would not. ``reach=None`` keeps the exact rule (the same selection as without clusters,
  up to float rounding; tested). The approximation's coverage and its effect on accuracy are
  measured in ``benchmarks/RESULTS.md``.

Everything after the projection is numpy: the rounds are many small steps, and small numpy
operations cost a few microseconds where small torch operations cost far more on a busy CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

# Slack on the pruning bound, so float rounding can only make it update a cluster it could skip.
_SLACK = 1e-4


def _sq_dist(a: np.ndarray, a_sq: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """``(n, m)`` squared distances ``|a_i|^2 - 2 a_i.b_j + |b_j|^2``, clipped at 0."""
    out = a @ (-2.0 * b.T)
    out += a_sq[:, None]
    out += b_sq[None, :]
    return np.maximum(out, 0.0, out=out)


def _farthest_in_pool(pool_x: np.ndarray, pool_d: np.ndarray, take: int) -> list[int]:
    """Exact greedy steps inside a pool: positions (into the pool) of up to ``take`` picks."""
    pool_sq = np.einsum("ij,ij->i", pool_x, pool_x)
    pairwise = _sq_dist(pool_x, pool_sq, pool_x, pool_sq)
    current = pool_d.copy()
    chosen: list[int] = []
    for _ in range(take):
        best = int(np.argmax(current))
        if current[best] < 0:
            break
        chosen.append(best)
        np.minimum(current, pairwise[best], out=current)
        current[best] = -1.0
    return chosen


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest values (any order)."""
    if k >= len(values):
        return np.arange(len(values))
    return np.argpartition(values, len(values) - k)[len(values) - k :]


def greedy_coreset(
    features: torch.Tensor | np.ndarray,
    size: int,
    *,
    project_dim: int | None = 128,
    batch: int = 32,
    candidates_per_pick: int = 16,
    clusters: int | None = 1024,
    reach: int | None = 4,
    leaf: int = 256,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Select ``size`` indices of ``features`` by (batched) greedy farthest-point sampling.

    Args:
        features: ``(N, C)`` float32 patch features.
        size: number of points to keep (clipped to N).
        project_dim: Johnson-Lindenstrauss random projection used for the distances (None: off).
        batch: points chosen per round (1 gives the exact textbook algorithm).
        candidates_per_pick: pool size per chosen point within a round.
        clusters: after about this many picks (the warm-up, which updates all N points),
            update only the cells a new centre can reach (None: all N points every round, the
            reference).
        reach: cells updated per new centre, those of smallest distance bound (None: every
            cell the bound cannot rule out, which selects what ``clusters=None`` selects).
        leaf: points per cell at most.
        seed: seed of the projection and the first point.
        progress: optional callback ``(selected, size)``.

    Returns:
        ``(size,)`` int64 indices into ``features``.
    """
    n = features.shape[0]
    size = min(size, n)
    if size <= 0:
        return torch.zeros(0, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    data = torch.as_tensor(features).float()
    if project_dim is not None and project_dim < data.shape[1]:
        projection = torch.randn(data.shape[1], project_dim, generator=generator) / project_dim**0.5
        data = data @ projection
    first = int(torch.randint(n, (1,), generator=generator))
    x = np.ascontiguousarray(data.numpy(), dtype=np.float32)
    del data
    sq = np.einsum("ij,ij->i", x, x)
    min_d = _sq_dist(x, sq, x[first : first + 1], sq[first : first + 1])[:, 0]
    selected = [first]
    min_d[first] = -1.0
    warm_up = size if clusters is None else min(size, max(clusters, 1))
    while len(selected) < warm_up:
        # Rounds keep their size across the switch, so the pruned rounds pick what unpruned ones would.
        take = min(batch, size - len(selected))
        pool = _top(min_d, take * candidates_per_pick)
        picks = _farthest_in_pool(x[pool], min_d[pool], take)
        if not picks:
            break
        index = pool[picks]
        np.minimum(min_d, _sq_dist(x, sq, x[index], sq[index]).min(1), out=min_d, where=min_d >= 0)
        min_d[index] = -1.0
        selected.extend(int(i) for i in index)
        if progress:
            progress(len(selected), size)
    if len(selected) < size:
        from threadpoolctl import threadpool_limits

        # Thousands of small products per second: BLAS threads only wait on each other there.
        with threadpool_limits(limits=1, user_api="blas"):
            selected = _pruned_rounds(
                x, sq, min_d, selected, size, batch, candidates_per_pick, reach, leaf, seed, progress
            )
    return torch.tensor(selected[:size], dtype=torch.long)


def _cells(x: np.ndarray, leaf: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split the points into cells of at most ``leaf`` points, each one contiguous slice.

    Each cell holding more is cut at the median of its points' projections on their principal
    axis (a few power iterations), as in a k-d tree: the cells come out compact *and* balanced,
    which the warm-up picks' own clusters are not (greedy files half of all points under a
    few picks in the densest regions, and a new centre there would have to update them all).

    Returns:
        ``order`` (the points' permutation that makes each cell contiguous), and each cell's
        ``start`` and ``count`` in that order.
    """
    rng = np.random.default_rng(seed)
    order = np.arange(len(x))
    stack = [(0, len(x))]
    starts, counts = [], []
    while stack:
        lo, hi = stack.pop()
        if hi - lo <= leaf:
            starts.append(lo)
            counts.append(hi - lo)
            continue
        points = x[order[lo:hi]]
        centred = points - points.mean(0)
        axis = np.asarray(rng.standard_normal(x.shape[1]), dtype=np.float32)
        for _ in range(3):  # power iterations towards the principal axis
            axis = centred.T @ (centred @ axis)
            axis /= np.linalg.norm(axis) + 1e-12
        projected = centred @ axis
        half = (hi - lo) // 2
        split = np.argpartition(projected, half)
        order[lo:hi] = order[lo:hi][split]
        stack.extend(((lo, lo + half), (lo + half, hi)))
    first = np.argsort(starts)
    return order, np.asarray(starts, dtype=np.int64)[first], np.asarray(counts, dtype=np.int64)[first]


def _pruned_rounds(
    x: np.ndarray,
    sq: np.ndarray,
    min_d: np.ndarray,
    selected: list[int],
    size: int,
    batch: int,
    candidates_per_pick: int,
    reach: int | None,
    leaf: int,
    seed: int,
    progress: Callable[[int, int], None] | None,
) -> list[int]:
    """The greedy rounds after the warm-up, updating only the cells a new centre can reach."""
    order, starts, counts = _cells(x, leaf, seed)
    x, sq, min_d = x[order], sq[order], min_d[order]
    n_cells = len(starts)
    cell_of = np.repeat(np.arange(n_cells), counts)
    centres = np.add.reduceat(x, starts, axis=0) / counts[:, None].astype(np.float32)
    centre_sq = np.einsum("ij,ij->i", centres, centres)
    spread = x - centres[cell_of]
    radius = np.sqrt(np.maximum.reduceat(np.einsum("ij,ij->i", spread, spread), starts))
    del spread
    cell_max = np.maximum.reduceat(min_d, starts)
    chosen: list[int] = []
    while len(selected) + len(chosen) < size:
        take = min(batch, size - len(selected) - len(chosen))
        pool_size = take * candidates_per_pick
        if reach is None:
            pool = _top(min_d, pool_size)
        else:  # candidates from the cells holding the largest distances
            top = _top(cell_max, max(take, pool_size // 8))
            candidates = _slices(starts[top], counts[top])
            pool = candidates[_top(min_d[candidates], pool_size)]
        picks = _farthest_in_pool(x[pool], min_d[pool], take)
        if not picks:
            break
        index = pool[picks]
        new, new_sq = x[index], sq[index]
        # Lower bound of the distance from each new centre to any point of each cell.
        bound = np.maximum(np.sqrt(_sq_dist(new, new_sq, centres, centre_sq)) - radius, 0.0)
        if reach is not None and reach < n_cells:
            near = np.argpartition(bound, reach - 1, axis=1)[:, :reach]
            pick, cell = np.repeat(np.arange(len(index)), reach), near.ravel()
        else:
            pick, cell = np.nonzero(np.ones_like(bound, dtype=bool))
        value = bound[pick, cell]
        keep = value * value * (1 - _SLACK) < cell_max[cell]
        pick, cell = pick[keep], cell[keep]
        by_cell = np.argsort(cell, kind="stable")
        pick, cell = pick[by_cell], cell[by_cell]
        edges = np.flatnonzero(np.diff(cell)) + 1
        min_d[index] = -1.0
        for group, k in zip(np.split(pick, edges), cell[np.r_[0, edges]] if len(cell) else [], strict=True):
            lo, hi = starts[k], starts[k] + counts[k]
            d = _sq_dist(x[lo:hi], sq[lo:hi], new[group], new_sq[group]).min(1)
            part = min_d[lo:hi]
            np.minimum(part, d, out=part, where=part >= 0)
            cell_max[k] = part.max()
        for k in np.unique(cell_of[index]):  # the picks' own cells lost a distance
            cell_max[k] = min_d[starts[k] : starts[k] + counts[k]].max()
        chosen.extend(int(i) for i in index)
        if progress:
            progress(len(selected) + len(chosen), size)
    return selected + order[np.asarray(chosen, dtype=np.int64)].tolist()


def _slices(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(start, start + length)`` for each pair, as one index array."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    return np.arange(total) + np.repeat(starts - offsets, lengths)

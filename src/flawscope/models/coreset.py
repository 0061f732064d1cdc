"""Greedy k-center coreset selection (PatchCore's memory-bank subsampling), made fast on a CPU.

The textbook greedy step picks the point farthest from the selected set, then updates every
point's distance to the set: one pass over all N points per selected point. Selecting 10% of
~600,000 patches that way costs N x size x dims multiply-adds (5 x 10^12 here, an hour on two
cores). Two changes make it fast, both principled:

- Distances are measured on a Johnson-Lindenstrauss random projection to ``project_dim``
  dimensions, as the PatchCore paper and anomalib do.
- The points are split into ``2**levels`` equal parts by a k-d tree (median cuts along each
  part's principal axis), and greedy runs inside each part, **to a common radius**: every part
  records its picks with their distance to the part's earlier picks (non-increasing), and the
  bank is the ``size`` picks of largest distance over all parts. So each part stops where its
  farthest remaining point is closer than that radius ``r*``, every point lies within ``r*`` of
  a pick of its own part, and ``r*`` bounds the bank's covering radius. A point near a part's
  edge may be covered by a pick across the edge that its own part does not see, so a part may
  spend a pick that global greedy would not: that is the approximation; the parts' size and the
  resulting coverage against exact greedy are measured in ``benchmarks/RESULTS.md`` and tested.

A part's greedy costs its own points per step instead of all N, so the whole selection costs
N x size x dims / 2**levels. Parts are processed in blocks that stay in the CPU's cache, several
at once as one batched product, and the blocks are spread over ``threads`` worker threads
(they are independent, so the result does not depend on the scheduling).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

# Picks per part aimed at when the number of parts is chosen automatically (fewer parts: closer
# to exact greedy and slower; measured in benchmarks/RESULTS.md).
PICKS_PER_PART = 64


def _kd_parts(
    x: torch.Tensor, levels: int, tree_dims: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Order the points into ``2**levels`` parts of equal size ``m`` (a balanced k-d tree).

    The tree is built on the points' ``tree_dims`` leading principal components (cheap to move
    around; the cuts follow the principal axes anyway): each part is cut at the median of its
    points' projections on its own principal axis (three power iterations on a sample).

    Returns:
        ``order`` ``(P, m)`` int64 rows of ``x``, and ``valid`` ``(P, m)`` bool (False marks the
        padding that makes the parts equal; padding sorts last).
    """
    n, d = x.shape
    parts = 2**levels
    m = -(-n // parts)
    order = torch.arange(parts * m)
    valid = order < n
    order = order.clamp(max=n - 1)
    if levels == 0:
        return order.view(1, m), valid.view(1, m)
    sample = x[torch.randint(n, (min(n, 65536),), generator=generator)].double()
    centre = sample.mean(0)
    _, vectors = torch.linalg.eigh((sample - centre).T @ (sample - centre))
    coords = ((x - centre.float()) @ vectors[:, -min(tree_dims, d) :].float()).contiguous()
    points = coords[order]
    for level in range(levels):
        groups, size = 2**level, parts * m // 2**level
        view = points.view(groups, size, -1)
        sub = view[:, torch.randint(size, (min(size, 1024),), generator=generator)]
        sub = sub - sub.mean(1, keepdim=True)
        axis = torch.randn(groups, sub.shape[2], 1, generator=generator)
        for _ in range(3):  # power iterations towards each group's principal axis
            axis = sub.transpose(1, 2) @ (sub @ axis)
            axis = axis / (axis.norm(dim=1, keepdim=True) + 1e-12)
        projected = torch.bmm(view, axis)[..., 0]
        projected[~valid.view(groups, size)] = float("inf")
        perm = (projected.argsort(dim=1, stable=True) + torch.arange(groups)[:, None] * size).reshape(-1)
        points, order, valid = points[perm], order[perm], valid[perm]
    return order.view(parts, m), valid.view(parts, m)


def _greedy_block(
    points: torch.Tensor, min_d: torch.Tensor, steps: int, first: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` greedy picks in each of a block's parts; updates ``min_d`` in place.

    Args:
        points: ``(B, m, k)`` the block's parts.
        min_d: ``(B, m)`` squared distance of each point to its part's picks (inf before the
            first, -1 for picked points and padding).
        steps: picks per part.
        first: ``(B,)`` positions of the first picks, or None to continue from ``min_d``.

    Returns:
        ``(B, steps)`` squared radii (each pick's distance before it was picked; -1 where a part
        had no point left) and ``(B, steps)`` positions within the part.
    """
    rows = torch.arange(points.shape[0])
    sq = (points * points).sum(-1)
    radii, positions = [], []
    for step in range(steps):
        radius, position = min_d.max(1)
        if step == 0 and first is not None:
            position = first
            radius = torch.where(min_d[rows, first] >= 0, float("inf"), -1.0)
        centre = points[rows, position]  # (B, k)
        dist = torch.baddbmm(sq[:, :, None], points, centre[:, :, None], alpha=-2.0)[..., 0]
        dist += (centre * centre).sum(1, keepdim=True)
        torch.minimum(min_d, dist, out=min_d)
        min_d[rows, position] = -1.0
        radii.append(radius)
        positions.append(position)
    return torch.stack(radii, 1), torch.stack(positions, 1)


def greedy_coreset(
    features: torch.Tensor | np.ndarray,
    size: int,
    *,
    project_dim: int | None = 64,
    levels: int | None = None,
    tree_dims: int = 16,
    block_points: int = 4096,
    threads: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Select ``size`` indices of ``features`` by greedy k-center selection in parts (module docstring).

    Args:
        features: ``(N, C)`` float32 patch features.
        size: number of points to keep (clipped to N).
        project_dim: dimensions of the Johnson-Lindenstrauss random projection the distances
            are measured in (None, or not fewer than C: the features themselves).
        levels: the points are split into ``2**levels`` parts (0: one part, exact greedy);
            None picks about :data:`PICKS_PER_PART` picks per part.
        tree_dims: principal components the k-d tree is built on.
        block_points: points processed together (the block should stay in the CPU's cache).
        threads: worker threads over the blocks (None: torch's thread count).
        seed: seed of the projection, the tree and the first picks.
        progress: optional callback ``(done, size)``, ``done`` counting picks made so far
            (capped at ``size``).

    Returns:
        ``(size,)`` int64 indices into ``features``, farthest-first.
    """
    n = features.shape[0]
    size = min(size, n)
    if size <= 0:
        return torch.zeros(0, dtype=torch.long)
    if levels is None:
        levels = max(0, math.floor(math.log2(max(size / PICKS_PER_PART, 1.0))))
    levels = min(levels, max(0, math.floor(math.log2(n))))
    generator = torch.Generator().manual_seed(seed)
    data = torch.as_tensor(features).float()
    if project_dim is not None and project_dim < data.shape[1]:
        projection = torch.randn(data.shape[1], project_dim, generator=generator) / project_dim**0.5
        data = data @ projection
    order, valid = _kd_parts(data, levels, tree_dims, generator)
    parts, m = order.shape
    points = data[order]  # (P, m, k), each part contiguous
    del data
    min_d = torch.full((parts, m), float("inf"))
    min_d[~valid] = -1.0
    # First pick of each part: a random real point (padding sorts last in its part).
    counts = valid.sum(1)
    first = torch.randint(m, (parts,), generator=generator) % counts.clamp_min(1)
    share = math.ceil(size / parts)
    radii: list[torch.Tensor] = []
    picks: list[torch.Tensor] = []
    active = torch.arange(parts)
    steps, start = share, True
    per_block = max(1, block_points // m)
    workers = threads or torch.get_num_threads()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers share the cores; each product is small
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            while len(active):
                blocks = [active[b : b + per_block] for b in range(0, len(active), per_block)]

                def run(
                    block: torch.Tensor, steps: int = steps, start: bool = start
                ) -> tuple[torch.Tensor, torch.Tensor]:
                    block_d = min_d[block]
                    r, p = _greedy_block(points[block], block_d, steps, first[block] if start else None)
                    min_d[block] = block_d  # blocks hold disjoint parts
                    return r.reshape(-1), order[block[:, None], p].reshape(-1)

                # Collected here, in block order, so radii and picks stay paired whatever the scheduling.
                for r, i in pool.map(run, blocks):
                    radii.append(r)
                    picks.append(i)
                    if progress:
                        progress(min(size, sum(len(r) for r in radii)), size)
                start = False
                recorded = torch.cat(radii)
                recorded = recorded[recorded >= 0]
                # r*: the size-th largest radius so far; parts that may still pick above it go on.
                cut = (
                    float(recorded.kthvalue(len(recorded) - size + 1).values)
                    if len(recorded) >= size
                    else -1.0
                )
                active = torch.nonzero(min_d.max(1).values > cut)[:, 0]
                steps = max(1, share // 2)
    finally:
        torch.set_num_threads(previous)
    # Blocks finish in any order: sort by part-independent keys so the result is deterministic.
    all_r, all_i = torch.cat(radii), torch.cat(picks)
    keep = all_r >= 0
    all_r, all_i = all_r[keep], all_i[keep]
    ranked = np.lexsort((all_i.numpy(), -all_r.numpy()))[:size]
    return all_i[torch.from_numpy(ranked)].contiguous()

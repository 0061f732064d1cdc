"""The greedy coreset in parts: one part is textbook greedy; parts cover almost as well, seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flawscope.models.coreset import greedy_coreset


@pytest.fixture(scope="module")
def blobs() -> torch.Tensor:
    """Clusters of unequal spread and size: greedy has to spend more picks on the wide ones."""
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(40, 16, generator=g) * 4
    spread = 0.3 + 1.5 * torch.rand(40, 1, generator=g)
    which = torch.randint(40, (6000,), generator=g)
    return centres[which] + spread[which] * torch.randn(6000, 16, generator=g)


def _radius(x: torch.Tensor, index: torch.Tensor) -> tuple[float, float]:
    """The coreset's covering radius (max over all points of the distance to the kept set) and mean."""
    d = torch.cdist(x.double(), x[index].double()).min(1).values
    return float(d.max()), float(d.mean())


def _textbook_greedy(x: torch.Tensor, first: int, size: int) -> list[int]:
    xd = x.double()
    picks, dist = [first], ((xd - xd[first]) ** 2).sum(1)
    for _ in range(size - 1):
        nxt = int(dist.argmax())
        picks.append(nxt)
        dist = torch.minimum(dist, ((xd - xd[nxt]) ** 2).sum(1))
    return picks


def test_one_part_is_textbook_greedy(blobs):
    one = greedy_coreset(blobs, 300, project_dim=None, levels=0)
    assert one.tolist() == _textbook_greedy(blobs, int(one[0]), 300)


@pytest.mark.parametrize("levels", [2, 4])
def test_parts_cover_almost_as_well_as_textbook_greedy_and_far_better_than_random(blobs, levels):
    exact = _radius(blobs, greedy_coreset(blobs, 600, project_dim=None, levels=0))
    parts = _radius(blobs, greedy_coreset(blobs, 600, project_dim=None, levels=levels))
    rand = _radius(blobs, torch.randperm(len(blobs), generator=torch.Generator().manual_seed(0))[:600])
    # Parts may spend picks on their edges that global greedy would not (see the module
    # docstring); the covering radius must stay close to exact greedy's and far below random's.
    assert parts[0] <= 1.12 * exact[0], (parts, exact)
    assert parts[1] <= 1.1 * exact[1], (parts, exact)
    assert parts[0] < 0.8 * rand[0], (parts, rand)


def test_projection_keeps_the_coverage(blobs):
    wide = torch.cat([blobs, blobs @ torch.randn(16, 112, generator=torch.Generator().manual_seed(2))], 1)
    exact = _radius(wide, greedy_coreset(wide, 600, project_dim=None, levels=0))
    projected = _radius(wide, greedy_coreset(wide, 600, project_dim=32, levels=3))
    assert projected[0] <= 1.3 * exact[0] and projected[1] <= 1.15 * exact[1], (projected, exact)


def test_selection_is_distinct_seeded_and_sized(blobs):
    a = greedy_coreset(blobs, 500, seed=3, levels=3)
    assert len(a) == 500 and len(set(a.tolist())) == 500
    assert torch.equal(a, greedy_coreset(blobs, 500, seed=3, levels=3))
    assert torch.equal(a, greedy_coreset(blobs, 500, seed=3, levels=3, threads=1))  # scheduling-free
    assert not torch.equal(a, greedy_coreset(blobs, 500, seed=4, levels=3))
    assert len(greedy_coreset(blobs[:10], 50)) == 10  # clipped to N
    assert len(greedy_coreset(blobs, 0)) == 0
    assert len(greedy_coreset(np.asarray(blobs[:300]), 30)) == 30  # numpy input too


def test_parts_with_padding_and_more_parts_than_picks(blobs):
    # 1,001 points in 16 parts of 63 (7 padding rows), and 8 picks for 16 parts.
    x = blobs[:1001]
    picked = greedy_coreset(x, 8, project_dim=None, levels=4)
    assert len(set(picked.tolist())) == 8 and int(picked.max()) < 1001
    everything = greedy_coreset(x, 1001, project_dim=None, levels=4)
    assert sorted(everything.tolist()) == list(range(1001))

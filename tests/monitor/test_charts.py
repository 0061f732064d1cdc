"""EWMA charts: the ARL computation against published values and simulation; normal scores; PSI."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from flawscope.monitor.charts import EwmaChart, ewma_arl, ewma_limit, ks_pvalue, normal_clip, psi


@pytest.mark.parametrize(("lam", "limit"), [(0.05, 2.615), (0.10, 2.814), (0.20, 2.962)])
def test_arl0_matches_lucas_saccucci(lam: float, limit: float) -> None:
    # Lucas & Saccucci (1990), Montgomery's table: these (lambda, L) pairs give ARL0 = 500.
    assert ewma_arl(lam, limit) == pytest.approx(500, rel=0.01)


def test_arl_falls_with_the_shift_and_limit_roundtrips() -> None:
    limit = ewma_limit(0.05, 10_000.0, 3.0)
    assert ewma_arl(0.05, limit, clip=3.0) == pytest.approx(10_000, rel=0.01)
    runs = [ewma_arl(0.05, limit, shift, 3.0) for shift in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert all(a > b for a, b in itertools.pairwise(runs))
    # Designing against a tolerated reference error widens the limits.
    assert ewma_limit(0.05, 10_000.0, 3.0, 0.1) > limit


def _simulated_arl(chart_args: tuple, draw, runs: int, rng: np.random.Generator) -> float:
    lengths = []
    for _ in range(runs):
        chart = EwmaChart(*chart_args)
        n = 0
        while chart.level != "alarm" and n < 100_000:
            chart.update(float(draw(rng)))
            n += 1
        lengths.append(n)
    return float(np.mean(lengths))


def test_normal_scores_give_the_designed_arl_on_a_skewed_statistic() -> None:
    # A lognormal statistic (like anomaly scores): raw standardisation would alarm far too often;
    # the normal scores against the calibration sample keep the designed ARL0.
    rng = np.random.default_rng(0)
    reference = rng.lognormal(0.0, 0.8, 4000)
    lam, arl0 = 0.2, 150.0
    clip = normal_clip(reference.size)
    limit = ewma_limit(lam, arl0, round(clip, 3))
    measured = _simulated_arl((reference, lam, limit * 0.9, limit), lambda r: r.lognormal(0.0, 0.8), 300, rng)
    assert measured == pytest.approx(arl0, rel=0.2)


def test_chart_detects_a_shift_and_says_which_way() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(10.0, 2.0, 500)
    lam = 0.05
    chart = EwmaChart(reference, lam, ewma_limit(lam, 1e4), ewma_limit(lam, 1e5))
    for value in rng.normal(10.0, 2.0, 2000):
        chart.update(float(value))
    assert chart.level == "ok"
    n = 0
    while chart.level != "alarm":
        chart.update(float(rng.normal(8.0, 2.0)))  # one standard deviation down
        n += 1
    assert n < 200
    assert chart.shift < -0.5
    chart.reset()
    assert chart.level == "ok" and chart.position == 0.0
    assert math.isnan(float("nan")) and chart.update(float("nan")) == 0.0  # NaN is skipped


def test_chart_refuses_a_constant_reference() -> None:
    with pytest.raises(ValueError, match="not all equal"):
        EwmaChart(np.zeros(50), 0.1, 3.0, 4.0)


def test_psi_and_ks_tell_same_from_shifted() -> None:
    rng = np.random.default_rng(2)
    reference = rng.normal(0, 1, 400)
    same = rng.normal(0, 1, 500)
    shifted = rng.normal(0.8, 1, 500)
    assert psi(reference, same) < 0.1 < 0.25 < psi(reference, shifted)
    assert ks_pvalue(reference, same)[1] > 1e-3 > 1e-7 > ks_pvalue(reference, shifted)[1]

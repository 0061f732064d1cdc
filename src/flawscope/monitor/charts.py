"""EWMA control charts with a stated in-control average run length (ARL0), and window tests.

An EWMA chart of a standardised statistic ``x`` (mean 0, standard deviation 1 while the process
is as calibrated) follows ``z_t = (1 - lam) z_{t-1} + lam x_t`` from ``z_0 = 0`` and signals when
``|z_t| > L sigma_z`` with ``sigma_z = sqrt(lam / (2 - lam))`` (the asymptotic limits). Its
ARL0, the mean number of parts between false signals, is computed here by Brook and Evans'
Markov chain (the interval between the limits cut into ``states`` cells; ``x`` normal), and
:func:`ewma_limit` finds the ``L`` that gives a wanted ARL0. Nothing here is a table copied from a
book: the numbers are computed, and tests check them against simulation.

Observations enter the chart as *normal scores* against the calibration sample (a
nonparametric EWMA): ``x = Phi^-1(F_ref(value))`` with ``F_ref`` the calibration values'
empirical distribution (interpolated between ranks, kept within ``[0.5/n, 1 - 0.5/n]``). While the
process is as calibrated, ``x`` is standard normal whatever the statistic's own distribution
(skewed scores, two-peaked positions), which is what the ARL computation assumes; and it is
bounded by ``clip = Phi^-1(1 - 0.5/n)`` (2.9 for 300 calibration parts), so that one odd part
cannot raise an alarm alone. The ARL computation includes the clip.

The limits are designed against the calibration sample's own error: the ``L`` of a wanted ARL0 is
the one that still gives that ARL0 when the calibration mean is off by ``tolerance`` standard
deviations (one standard error, ``1/sqrt(n)``, by default), so that a reference of a few hundred
parts does not shorten the time between false alarms by an order of magnitude.

Window tests compare the last ``window`` values with the calibration sample: the population
stability index (PSI, over the reference's deciles) and the two-sample Kolmogorov-Smirnov test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import ndtri
from scipy.stats import ks_2samp, norm

LEVELS = ("ok", "warning", "alarm")


def _clipped_cdf(x: np.ndarray, shift: float, clip: float) -> np.ndarray:
    """CDF of ``clip(N(shift, 1), -clip, clip)`` at ``x``."""
    cdf = norm.cdf(x - shift)
    return np.where(x >= clip, 1.0, np.where(x < -clip, 0.0, cdf))


def ewma_arl(
    lam: float, limit: float, shift: float = 0.0, clip: float = math.inf, states: int = 301
) -> float:
    """Average run length of a two-sided EWMA chart (Brook and Evans' Markov chain).

    Args:
        lam: smoothing weight in (0, 1].
        limit: ``L``, the control limit in units of the asymptotic ``sigma_z``.
        shift: mean of the standardised observations (0: in control).
        clip: observations are clipped to ``[-clip, clip]`` before they enter the chart.
        states: cells between the limits (odd, so one is centred on 0).

    Returns:
        Mean number of observations until the first signal, starting from ``z_0 = 0``.
    """
    h = limit * math.sqrt(lam / (2.0 - lam))
    width = 2.0 * h / states
    centres = -h + width * (np.arange(states) + 0.5)
    # z' = (1 - lam) z + lam x lands in cell j when x is in [(lo_j - (1-lam) z_i) / lam, (hi_j - ...) / lam).
    lower = (centres[None, :] - width / 2 - (1.0 - lam) * centres[:, None]) / lam
    upper = (centres[None, :] + width / 2 - (1.0 - lam) * centres[:, None]) / lam
    transitions = _clipped_cdf(upper, shift, clip) - _clipped_cdf(lower, shift, clip)
    run = np.linalg.solve(np.eye(states) - transitions, np.ones(states))
    return float(run[states // 2])


@lru_cache(maxsize=64)
def ewma_limit(lam: float, arl0: float, clip: float = math.inf, tolerance: float = 0.0) -> float:
    """The ``L`` giving a two-sided EWMA chart the ARL ``arl0`` at a mean shift of ``tolerance`` (bisection).

    Raises:
        ValueError: for an ARL0 below 2 or a weight outside (0, 1].
    """
    if not 0.0 < lam <= 1.0:
        raise ValueError(f"EWMA weight must be in (0, 1], got {lam}")
    if arl0 < 2:
        raise ValueError(f"ARL0 must be at least 2, got {arl0}")
    low, high = 0.5, 8.0
    for _ in range(60):
        mid = (low + high) / 2
        if ewma_arl(lam, mid, shift=tolerance, clip=clip) < arl0:
            low = mid
        else:
            high = mid
        if high - low < 1e-3:
            break
    return high


def normal_clip(n: int) -> float:
    """The largest normal score a calibration sample of ``n`` values gives: ``Phi^-1(1 - 0.5/n)``."""
    return float(norm.ppf(1.0 - 0.5 / n))


class EwmaChart:
    """A two-sided EWMA chart of one statistic's normal scores against its calibration sample.

    Args:
        reference: the statistic's values on the calibration parts (at least 10, not all equal).
        lam: smoothing weight.
        warning_limit: ``L`` of the warning level.
        alarm_limit: ``L`` of the alarm level.
    """

    def __init__(self, reference: np.ndarray, lam: float, warning_limit: float, alarm_limit: float) -> None:
        ordered = np.sort(np.asarray(reference, dtype=np.float64))
        if ordered.size < 10 or not ordered[-1] > ordered[0]:
            raise ValueError("a chart needs at least 10 calibration values that are not all equal")
        n = ordered.size
        self.reference = ordered
        self.mean = float(ordered.mean())
        self.std = float(ordered.std(ddof=1))
        self._ranks = (np.arange(n) + 0.5) / n
        self.clip = normal_clip(n)
        self.lam = lam
        self.sigma_z = math.sqrt(lam / (2.0 - lam))
        self.warning_limit = warning_limit
        self.alarm_limit = alarm_limit
        self.z = 0.0
        self.n = 0

    def score(self, value: float) -> float:
        """The value's normal score against the calibration sample."""
        share = float(np.interp(value, self.reference, self._ranks))
        return float(ndtri(share))  # scipy.stats.norm.ppf does the same 300x slower

    def update(self, value: float) -> float:
        """Add one observation (NaN is skipped); returns the chart statistic in units of ``sigma_z``."""
        if math.isfinite(value):
            self.z = (1.0 - self.lam) * self.z + self.lam * self.score(value)
            self.n += 1
        return self.z / self.sigma_z

    @property
    def position(self) -> float:
        """The chart statistic in units of ``sigma_z`` (the limits are ``±L``)."""
        return self.z / self.sigma_z

    @property
    def shift(self) -> float:
        """The smoothed shift in normal-score units (about calibration standard deviations)."""
        return self.z

    @property
    def level(self) -> str:
        """``"ok"``, ``"warning"`` or ``"alarm"``."""
        position = abs(self.position)
        if position > self.alarm_limit:
            return "alarm"
        return "warning" if position > self.warning_limit else "ok"

    def reset(self) -> None:
        """Back to the calibration state (after the cause was fixed and acknowledged)."""
        self.z = 0.0


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference`` over the reference's quantile bins.

    ``sum((p_cur - p_ref) * ln(p_cur / p_ref))`` with each share floored at 0.5 / n so that an
    empty bin does not make it infinite. Conventional reading: < 0.1 stable, 0.1-0.25 a shift
    worth a look, > 0.25 a shift.
    """
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=edges.size + 1)
    cur = np.bincount(np.searchsorted(edges, current, side="right"), minlength=edges.size + 1)
    p_ref = np.maximum(ref / reference.size, 0.5 / reference.size)
    p_cur = np.maximum(cur / current.size, 0.5 / current.size)
    return float(np.sum((p_cur - p_ref) * np.log(p_cur / p_ref)))


def ks_pvalue(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value (asymptotic, fast for windows of hundreds)."""
    result = ks_2samp(reference, current, method="asymp")
    return float(result.statistic), float(result.pvalue)


@dataclass(frozen=True)
class WindowTest:
    """The window tests of one statistic over the last window.

    Attributes:
        psi: population stability index against the calibration sample.
        ks: Kolmogorov-Smirnov statistic.
        p_value: its p-value.
        level: ``"ok"``, ``"warning"`` or ``"alarm"`` from either test.
        detector: ``"psi"`` or ``"ks"``, whichever gave the level.
    """

    psi: float
    ks: float
    p_value: float
    level: str
    detector: str

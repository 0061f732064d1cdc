"""Paired comparison of two models' recall (or false rejects) on the same labelled parts.

Both models judge the same parts, so the evidence about their difference lies in the parts they
judge differently: ``live_only`` (stopped by the live model alone) and ``candidate_only``. With
``n`` parts the difference in recall is ``(candidate_only - live_only) / n``. Two numbers are
reported for it:

* an interval for the difference: Newcombe's hybrid score interval for paired proportions
  (Wilson intervals of both rates combined through their phi correlation; no continuity
  correction), which keeps its coverage at the 20-200 parts a plant has per defect type;
* an exact test on the discordant pairs against a margin ``delta``. Given ``m = live_only +
  candidate_only`` discordant pairs, ``live_only`` is binomial with ``pi = P(live only |
  discordant)``, and a difference of exactly ``-delta`` means ``pi0 = 1/2 + delta * n / (2 m)``
  (McNemar's exact test when ``delta = 0``). The test conditions on ``m``: it does not count the
  uncertainty of how often the two models disagree, which the interval does.

Two rules decide with them, at a stated confidence: the two-sided interval's level, so that each
one-sided decision is taken at ``alpha = (1 - confidence) / 2`` ("the 95% interval excludes it"):

* ``non_inferiority``: the candidate must show that it is worse by less than ``delta``
  (the interval's lower end above ``-delta``; exact: ``P(B <= live_only; m, pi0) <= alpha``).
  The burden of proof is on the candidate; with few parts only a wide margin can be shown.
* ``inferiority``: the candidate is refused only when the data show that it is worse by more
  than ``delta`` (the interval's upper end below ``-delta``; exact: ``P(B >= live_only; m, pi0)
  <= alpha``); a difference within the noise passes. With ``delta = 0`` this is McNemar's exact
  one-sided test: "the live model catches parts the candidate misses more often than the reverse".

``method`` says which statistic decides: ``exact`` (the binomial test), ``score`` (the interval)
or ``auto``: the exact test where it is exact (``delta = 0``: the discordant pairs' split does
not depend on how often the models disagree), the interval otherwise (with ``delta > 0`` the
conditional test passes a candidate that lost 5 parts of 55 and gained none as "within 10
points", while the interval reaches -17.6 points).

A fixed drop in points (the rule these replace) treats 2 parts of 20 like 20 parts of 200.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.stats import binom, norm

RULES = ("non_inferiority", "inferiority")
METHODS = ("auto", "exact", "score")


@dataclass(frozen=True)
class PairedTest:
    """One paired comparison and its verdict.

    Attributes:
        n: parts judged by both models.
        both: parts both models stopped.
        live_only: parts only the live model stopped.
        candidate_only: parts only the candidate stopped.
        difference: ``(candidate_only - live_only) / n`` (the candidate's rate minus the live one's).
        low: lower end of the two-sided interval of the difference at ``confidence``.
        high: its upper end.
        margin: ``delta``, the loss the rule tolerates (a share, 0.05 = 5 points).
        rule: ``non_inferiority`` or ``inferiority``.
        confidence: the stated confidence (of the interval; each one-sided decision at half the rest).
        p_value: the exact test's one-sided p-value (see the module docstring).
        method: the statistic that decided: ``exact`` or ``score``.
        passed: whether the candidate holds this gate.
    """

    n: int
    both: int
    live_only: int
    candidate_only: int
    difference: float
    low: float
    high: float
    margin: float
    rule: str
    confidence: float
    p_value: float
    method: str
    passed: bool

    def describe(self, what: str = "recall", swapped: bool = False) -> str:
        """One line: the counts, the difference with its interval, the test and the rule.

        Args:
            what: the rate compared.
            swapped: the test was made with the roles of the counts swapped (false rejects: a
                good part only the candidate stops is its loss); the counts are shown as stops.
        """
        verdict = (
            f"worse by less than {self.margin:.0%} {'shown' if self.passed else 'not shown'}"
            if self.rule == "non_inferiority"
            else f"{'no ' if self.passed else ''}evidence of a loss over {self.margin:.0%}"
        )
        live_only, candidate_only = (
            (self.candidate_only, self.live_only) if swapped else (self.live_only, self.candidate_only)
        )
        return (
            f"{what} {self.difference:+.1%} [{self.low:+.1%}, {self.high:+.1%}] on {self.n} parts "
            f"({live_only} stopped by live only, {candidate_only} by the candidate only); "
            f"exact p = {self.p_value:.3g}; {self.rule.replace('_', '-')} by the "
            f"{'exact test' if self.method == 'exact' else 'interval'} at {self.confidence:.0%}: {verdict}"
        )


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(
    both: int, live_only: int, candidate_only: int, n: int, confidence: float
) -> tuple[float, float]:
    """Two-sided interval of ``candidate rate - live rate`` for paired proportions.

    Args:
        both: parts both models stopped.
        live_only: parts only the live model stopped.
        candidate_only: parts only the candidate stopped.
        n: all parts (the rest neither stopped).
        confidence: two-sided confidence.
    """
    if n <= 0:
        return math.nan, math.nan
    neither = n - both - live_only - candidate_only
    z = float(norm.ppf(0.5 + confidence / 2))
    p_cand, p_live = (both + candidate_only) / n, (both + live_only) / n
    l_c, u_c = _wilson(both + candidate_only, n, z)
    l_l, u_l = _wilson(both + live_only, n, z)
    # phi: the correlation of the two models' decisions on the same parts.
    rows = (both + candidate_only) * (live_only + neither) * (both + live_only) * (candidate_only + neither)
    phi = (both * neither - candidate_only * live_only) / math.sqrt(rows) if rows > 0 else 0.0
    diff = p_cand - p_live
    down = math.sqrt(
        max(0.0, (p_cand - l_c) ** 2 - 2 * phi * (p_cand - l_c) * (u_l - p_live) + (u_l - p_live) ** 2)
    )
    up = math.sqrt(
        max(0.0, (u_c - p_cand) ** 2 - 2 * phi * (u_c - p_cand) * (p_live - l_l) + (p_live - l_l) ** 2)
    )
    return max(-1.0, diff - down), min(1.0, diff + up)


def exact_p(live_only: int, candidate_only: int, n: int, margin: float, rule: str) -> float:
    """The exact conditional test's one-sided p-value (see the module docstring).

    Raises:
        ValueError: an unknown rule or a negative margin.
    """
    if rule not in RULES:
        raise ValueError(f"the rule must be one of {', '.join(RULES)}, got {rule!r}")
    if margin < 0:
        raise ValueError(f"the margin must be >= 0, got {margin}")
    m = live_only + candidate_only
    if m == 0:
        # No part judged differently: a difference of 0, a loss of delta only when delta is 0.
        if rule == "inferiority":
            return 1.0
        return 1.0 if margin == 0 else 0.0
    pi0 = 0.5 + margin * n / (2 * m)
    if pi0 > 1.0:  # even losing every discordant part is a loss below delta
        return 0.0 if rule == "non_inferiority" else 1.0
    if rule == "non_inferiority":
        return float(binom.cdf(live_only, m, pi0))
    return float(binom.sf(live_only - 1, m, pi0))


def paired_test(
    both: int,
    live_only: int,
    candidate_only: int,
    n: int,
    *,
    margin: float,
    rule: str = "non_inferiority",
    confidence: float = 0.95,
    method: str = "auto",
) -> PairedTest:
    """Compare the candidate with the live model on ``n`` parts both judged (see the module docstring).

    Args:
        both: parts both models stopped.
        live_only: parts only the live model stopped.
        candidate_only: parts only the candidate stopped.
        n: parts judged by both.
        margin: the loss tolerated (a share).
        rule: ``non_inferiority`` or ``inferiority``.
        confidence: two-sided confidence of the interval; each one-sided decision at half the rest.
        method: ``auto``, ``exact`` or ``score`` (see the module docstring).

    Raises:
        ValueError: inconsistent counts, an unknown rule, a margin or confidence out of range.
    """
    if min(both, live_only, candidate_only) < 0 or both + live_only + candidate_only > n:
        raise ValueError(f"inconsistent paired counts: {both} + {live_only} + {candidate_only} of {n}")
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"the confidence must be in [0.5, 1), got {confidence}")
    if method not in METHODS:
        raise ValueError(f"the method must be one of {', '.join(METHODS)}, got {method!r}")
    p = exact_p(live_only, candidate_only, n, margin, rule) if n else 1.0
    low, high = newcombe_interval(both, live_only, candidate_only, n, confidence)
    used = ("exact" if margin == 0 else "score") if method == "auto" else method
    if n == 0:
        passed = rule == "inferiority"  # nothing to show anything with
    elif used == "exact":
        alpha = (1.0 - confidence) / 2
        passed = (p <= alpha) if rule == "non_inferiority" else (p > alpha)
    else:
        passed = (low > -margin) if rule == "non_inferiority" else not (high < -margin)
    diff = (candidate_only - live_only) / n if n else math.nan
    return PairedTest(
        n, both, live_only, candidate_only, diff, low, high, margin, rule, confidence, p, used, passed
    )

"""The numbers a dashboard shows, computed once here for the live feed and for the REST API.

Rates: of the parts inspected, *yield* is the share passed, *review rate* the share sent to a
person, *reject rate* the share stopped otherwise (failed, errors, not inspected): the three add up
to 1. Shifts start at configured local times; counts are kept in 15-minute buckets so that shifts
starting on any quarter hour (and time zones with half-hour offsets) fold exactly. The reject-rate
control chart is a p-chart over consecutive subgroups of parts, with 3-sigma limits around the
mean rate of the subgroups shown.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from flawscope.errors import InputError
from flawscope.types import Outcome

BUCKET_S = 900
OUTCOMES = tuple(o.value for o in Outcome)


@dataclass(frozen=True)
class Rates:
    """Counts and rates of a set of inspected parts.

    Attributes:
        n: parts inspected.
        counts: parts per outcome (every outcome present).
        yield_: passed / n (NaN when n is 0).
        review_rate: sent to review / n.
        reject_rate: failed, errors and not inspected / n.
    """

    n: int
    counts: Mapping[str, int]
    yield_: float
    review_rate: float
    reject_rate: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN becomes None)."""
        data = asdict(self)
        data["yield"] = data.pop("yield_")
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in data.items()}


def rates(counts: Mapping[str, int]) -> Rates:
    """Rates from counts per outcome value."""
    full = {o: int(counts.get(o, 0)) for o in OUTCOMES}
    n = sum(full.values())
    if n == 0:
        nan = math.nan
        return Rates(0, full, nan, nan, nan)
    passed, review = full[Outcome.PASS.value], full[Outcome.REVIEW.value]
    return Rates(n, full, passed / n, review / n, (n - passed - review) / n)


def parse_shifts(text: str) -> tuple[int, ...]:
    """Shift start times, ``"06:00,14:00,22:00"``, as minutes after local midnight, sorted.

    Raises:
        InputError: not ``HH:MM`` times on quarter hours, or none.
    """
    starts = []
    for item in text.split(","):
        item = item.strip()
        try:
            hours, minutes = (int(v) for v in item.split(":")) if ":" in item else (int(item), 0)
        except ValueError:
            raise InputError("shifts", f"{item!r} is not a time like 06:00") from None
        if not (0 <= hours < 24 and minutes in (0, 15, 30, 45)):
            raise InputError("shifts", f"{item!r}: shifts start on a quarter hour between 00:00 and 23:45")
        starts.append(hours * 60 + minutes)
    if not starts:
        raise InputError("shifts", "give at least one shift start time")
    return tuple(sorted(set(starts)))


def shift_start(ts: float, starts: Sequence[int]) -> datetime:
    """Local start time of the shift that time ``ts`` (seconds since the epoch) falls in."""
    local = datetime.fromtimestamp(ts).astimezone()
    minute = local.hour * 60 + local.minute
    earlier = [s for s in starts if s <= minute]
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if earlier:
        start = earlier[-1]
    else:  # before the first shift of the day: the previous day's last shift
        start, day = starts[-1], day - timedelta(days=1)
    return (day + timedelta(minutes=start)).astimezone()


def shift_label(start: datetime, starts: Sequence[int]) -> str:
    """``"Tue 22:00-06:00"``: the shift's day and hours."""
    minute = start.hour * 60 + start.minute
    after = [s for s in starts if s > minute]
    end = after[0] if after else starts[0]
    return f"{start:%a} {start:%H:%M}-{end // 60:02d}:{end % 60:02d}"


def by_shift(
    buckets: Mapping[tuple[str, int], Mapping[str, int]], starts: Sequence[int], last: int = 3
) -> list[dict[str, Any]]:
    """Rates per camera and shift for the latest ``last`` shifts, newest first.

    Args:
        buckets: counts per outcome for each ``(camera, bucket start)`` (15-minute buckets).
        starts: shift start times (see :func:`parse_shifts`).
        last: how many shifts to show.
    """
    folded: dict[tuple[float, str], dict[str, int]] = {}
    labels: dict[float, str] = {}
    for (camera, bucket), counts in buckets.items():
        start = shift_start(bucket + 1, starts)
        key = (start.timestamp(), camera)
        labels[start.timestamp()] = shift_label(start, starts)
        into = folded.setdefault(key, dict.fromkeys(OUTCOMES, 0))
        for outcome, n in counts.items():
            into[outcome] = into.get(outcome, 0) + int(n)
    shown = sorted(labels, reverse=True)[:last]
    rows = []
    for start_ts in shown:
        for (ts, camera), counts in sorted(folded.items(), key=lambda kv: kv[0][1]):
            if ts == start_ts:
                rows.append(
                    {"shift": labels[ts], "shift_start": ts, "camera": camera, **rates(counts).to_dict()}
                )
    return rows


def percentiles(values: Iterable[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float | None]:
    """``{"p50": ..., "p95": ..., "p99": ...}`` of the finite values (None when there are none)."""
    array = np.fromiter((v for v in values if v is not None and math.isfinite(v)), dtype=np.float64)
    if array.size == 0:
        return {f"p{q:g}": None for q in qs}
    found = np.percentile(array, qs)
    return {f"p{q:g}": float(v) for q, v in zip(qs, found, strict=True)}


def control_chart(groups: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """A p-chart of the reject rate over subgroups of consecutive parts.

    Args:
        groups: ``(parts, rejected)`` per subgroup, oldest first.

    Returns:
        ``points`` (rate per subgroup), ``center`` (mean rate), ``ucl``/``lcl`` per subgroup
        (3-sigma binomial limits), ``out`` (indices of the points beyond a limit).
    """
    groups = [(n, r) for n, r in groups if n > 0]
    if not groups:
        return {"points": [], "center": None, "ucl": [], "lcl": [], "out": []}
    total = sum(n for n, _ in groups)
    center = sum(r for _, r in groups) / total
    points, ucl, lcl, out = [], [], [], []
    for i, (n, r) in enumerate(groups):
        sigma = math.sqrt(center * (1 - center) / n)
        high, low = min(1.0, center + 3 * sigma), max(0.0, center - 3 * sigma)
        rate = r / n
        points.append(rate)
        ucl.append(high)
        lcl.append(low)
        if rate > high or rate < low:
            out.append(i)
    return {"points": points, "center": center, "ucl": ucl, "lcl": lcl, "out": out}

"""The line's settings: one validated record, checked before anything is opened or created."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from flawscope.errors import InputError
from flawscope.types import Outcome

BACKPRESSURE = ("block", "drop")


@dataclass(frozen=True)
class LineSettings:
    """How a line runs (see :func:`flawscope.line.run_line` for each field's meaning).

    Raises:
        InputError: on construction, naming the setting and the values it takes.
    """

    station: str = "station"
    batch_size: int = 8
    queue_size: int = 64
    backpressure: str = "block"
    status_interval_s: float = 0.5
    review_sample: float = 0.0
    keep_maps: frozenset[str] = frozenset({"review", "fail"})

    def __post_init__(self) -> None:
        station, batch_size, queue_size = self.station, self.batch_size, self.queue_size
        if not isinstance(station, str) or not station.strip():
            raise InputError("station", "a station name is required")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError("batch_size", f"must be a whole number >= 1, got {batch_size!r}")
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise InputError("queue_size", f"must be a whole number >= 1, got {queue_size!r}")
        if self.backpressure not in BACKPRESSURE:
            raise InputError(
                "backpressure", f"must be one of {', '.join(BACKPRESSURE)}, got {self.backpressure!r}"
            )
        if not self.status_interval_s > 0:
            raise InputError("status_interval_s", f"must be > 0, got {self.status_interval_s}")
        if not 0.0 <= self.review_sample <= 1.0:
            raise InputError("review_sample", f"must be a fraction in [0, 1], got {self.review_sample}")
        unknown = set(self.keep_maps) - {o.value for o in Outcome}
        if unknown:
            raise InputError("keep_maps", f"{sorted(unknown)} are not outcomes")
        object.__setattr__(self, "keep_maps", frozenset(self.keep_maps))

    @property
    def drop(self) -> bool:
        """A full inspection queue drops the part (recorded ``not_inspected``) instead of blocking."""
        return self.backpressure == "drop"


def check_line_settings(
    *,
    station: str = "station",
    batch_size: int = 8,
    queue_size: int = 64,
    backpressure: str = "block",
    status_interval_s: float = 0.5,
    review_sample: float = 0.0,
    keep_maps: Collection[str] = (),
) -> LineSettings:
    """Refuse line settings :func:`~flawscope.line.run_line` cannot run with, before anything is created.

    Returns:
        The settings as one record.

    Raises:
        InputError: naming the setting and the values it takes.
    """
    return LineSettings(
        station, batch_size, queue_size, backpressure, status_interval_s, review_sample, frozenset(keep_maps)
    )

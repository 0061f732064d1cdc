"""``websim://``: a simulated line-scan web (steel or textile) with known defects, at an encoder's line rate.

The rows come from :class:`flawscope.data.webs.WebGenerator`. The line rate follows the web
speed and the row size, as an encoder-triggered line-scan camera's does: ``speed`` m/min at
``mm_per_row`` mm per row gives ``speed * 1000 / 60 / mm_per_row`` rows per second
(``speed=0``: as fast as the consumer takes them). ``drop=START:COUNT[,START:COUNT...]`` loses
rows on the way (a camera or network fault), to rehearse what the line does with a gap.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

import numpy as np

from flawscope.acquire.assembly import RowBlock
from flawscope.acquire.registry import Option, SourceTarget, register_source
from flawscope.acquire.rows import RowSource, WebGeometry, row_options
from flawscope.data.webs import WebGenerator, WebSpec
from flawscope.errors import InputError


def parse_drops(text: str) -> tuple[tuple[int, int], ...]:
    """``"1000:40,5000:8"`` -> ``((1000, 40), (5000, 8))`` (first row lost, rows lost).

    Raises:
        ValueError: for anything else.
    """
    drops = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        start, _, count = item.partition(":")
        first, n = int(start), int(count)
        if first < 0 or n < 1:
            raise ValueError(f"{item!r}: need START >= 0 and COUNT >= 1")
        drops.append((first, n))
    return tuple(sorted(drops))


parse_drops.__name__ = "list of START:COUNT"


class WebSimSource(RowSource):
    """Rows of a simulated web, delivered in blocks at the encoder's line rate.

    Args:
        spec: the web to generate (its ``mm_per_row``/``mm_per_px`` are the source's).
        uri: URI reported in frames.
        speed_m_min: web speed in m/min (0: as fast as possible).
        drops: ``(first_row, count)`` stretches of rows lost on the way.
        **options: frame assembly (``frame_rows``, ``overlap_rows``, ``roll``).
    """

    def __init__(
        self,
        spec: WebSpec,
        *,
        uri: str = "websim://",
        speed_m_min: float = 0.0,
        drops: tuple[tuple[int, int], ...] = (),
        **options: Any,
    ) -> None:
        super().__init__(uri, mm_per_row=spec.mm_per_row, mm_per_px=spec.mm_per_px, **options)
        if not speed_m_min >= 0:
            raise InputError(f"{uri}: speed", f"must be >= 0 m/min, got {speed_m_min}")
        self.spec = spec
        self.generator = WebGenerator(spec)
        self.speed_m_min = speed_m_min
        self.drops = drops
        self.width_px = spec.width_px

    @property
    def line_rate_hz(self) -> float:
        """Rows per second at the set speed (0 when unpaced)."""
        return WebGeometry(self.spec.mm_per_row, self.spec.mm_per_px, self.spec.width_px).rows_per_second(
            self.speed_m_min
        )

    def _keep(self, first: int, rows: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """The pieces of a block that were not dropped."""
        pieces = [(first, rows)]
        for start, count in self.drops:
            kept = []
            for top, piece in pieces:
                end = top + piece.shape[0]
                if start >= end or start + count <= top:
                    kept.append((top, piece))
                    continue
                if start > top:
                    kept.append((top, piece[: start - top]))
                if start + count < end:
                    kept.append((start + count, piece[start + count - top :]))
            pieces = kept
        return pieces

    def _blocks(self) -> Generator[RowBlock, None, None]:
        began = time.monotonic()
        rate = self.line_rate_hz
        for first, rows in self.generator.blocks():
            end = first + rows.shape[0]
            if rate > 0 and self._wait(began + end / rate - time.monotonic()):
                return
            if self.stopping:
                return
            stamp = time.time()
            for top, piece in self._keep(first, rows):
                yield RowBlock(top, piece, stamp)


@register_source(
    "websim",
    options=row_options(
        length=Option("length_m", float),
        width=Option("width_px", int),
        texture=Option("texture", str),
        defects=Option("n_defects", int),
        seed=Option("seed", int),
        speed=Option("speed_m_min", float),
        drop=Option("drops", parse_drops),
        block=Option("block_rows", int),
    ),
    example="websim://?length=50&width=512&defects=10&speed=60&mm_per_row=1&frame=256&overlap=32",
    summary="simulated line-scan web with known defects, encoder-paced",
)
def open_websim(target: SourceTarget, **options: Any) -> WebSimSource:
    """Open ``websim://?...`` (the location is unused)."""
    spec_keys = (
        "length_m",
        "width_px",
        "texture",
        "n_defects",
        "seed",
        "block_rows",
        "mm_per_row",
        "mm_per_px",
    )
    spec = WebSpec(**{k: options.pop(k) for k in spec_keys if k in options})
    return WebSimSource(spec, uri=target.uri, **options)

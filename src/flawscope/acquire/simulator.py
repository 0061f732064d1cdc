"""A line simulator: parts drawn from a dataset at a set rate and defect ratio, with the ground truth.

Used to rehearse a station (rate, backpressure, operator screens) and to measure it, before a
camera is there. Good parts come from the dataset's good images (training and test), defective
ones from its defect folders; every frame's ``meta`` holds ``label`` (``"0"`` good, ``"1"``
defective), ``defect_type`` and the image ``path``.

Parts arrive on a fixed schedule (``start + i / rate``) like on a conveyor: a consumer that falls
behind gets the late parts at once, it does not slow the conveyor down.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Generator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from flawscope.acquire.base import Source
from flawscope.acquire.perturb import Perturbation
from flawscope.acquire.registry import Option, SourceTarget, parse_optional_int, register_source
from flawscope.data.datasets import load_dataset
from flawscope.data.imageio import read_image
from flawscope.errors import FlawscopeError, InputError
from flawscope.types import Frame, Sample

logger = logging.getLogger(__name__)


def default_prefix() -> str:
    """A part id prefix unique to one run: ``sim-20250101T120000-3f2a`` (UTC time, random suffix)."""
    return f"sim-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(2)}"


class SimSource(Source):
    """Simulated parts from a dataset folder (MVTec AD or plain layout).

    Args:
        dataset: dataset folder.
        rate: parts per second (0: as fast as the consumer takes them).
        defect_ratio: probability that a part is defective, in [0, 1].
        count: number of parts (None or 0: endless).
        seed: seed of the choice of parts.
        start: index of the first part (part ids are ``<prefix>-<index>``).
        prefix: part id prefix. By default ``sim-<UTC start time>-<4 random hex digits>``, so
            that the parts of two runs never share an id in one audit trail; an explicit prefix
            is used as given (with ``start``, to continue a numbering).
        cache: decoded images kept in memory.
        uri: URI to report in frames.
        drift: a simulated drift applied to the parts (:class:`~flawscope.acquire.perturb.Perturbation`
            or its text ``KIND:AMOUNT[:RAMP[:START]]``, e.g. ``dim:0.15:2000``); each frame's
            ``meta["drift"]`` holds the strength applied.

    Raises:
        InputError: for an unusable dataset, a ratio outside [0, 1] or a ratio the dataset cannot give
            (defects asked for but none in the dataset, or the other way round).
    """

    def __init__(
        self,
        dataset: str | os.PathLike[str],
        *,
        rate: float = 20.0,
        defect_ratio: float = 0.1,
        count: int | None = 1000,
        seed: int = 0,
        start: int = 0,
        prefix: str | None = None,
        cache: int = 256,
        uri: str | None = None,
        drift: Perturbation | str | None = None,
    ) -> None:
        root = Path(dataset).expanduser().absolute()
        super().__init__(uri or f"sim://{root.as_posix()}")
        if not 0.0 <= defect_ratio <= 1.0:
            raise InputError(f"{self.uri}: defect_ratio", f"must be in [0, 1], got {defect_ratio}")
        if not rate >= 0:
            raise InputError(f"{self.uri}: rate", f"must be >= 0 parts per second, got {rate}")
        loaded = load_dataset(root)
        self.good: tuple[Sample, ...] = (*loaded.train, *loaded.test_good)
        self.defect: tuple[Sample, ...] = loaded.test_defect
        if defect_ratio > 0 and not self.defect:
            raise InputError(root, f"defect_ratio is {defect_ratio} but the dataset has no defective images")
        if defect_ratio < 1 and not self.good:
            raise InputError(root, "the dataset has no good images")
        self.rate = rate
        self.defect_ratio = defect_ratio
        self.count = count or None
        self.seed = seed
        self.start = start
        self.prefix = prefix or default_prefix()
        self.drift = Perturbation.parse(drift) if isinstance(drift, str) else drift
        self._cache: OrderedDict[str, np.ndarray | str] = OrderedDict()
        self._cache_size = max(1, cache)

    def _image(self, path: str) -> np.ndarray | str:
        """The decoded image, or the reason it cannot be read (cached, LRU)."""
        hit = self._cache.get(path)
        if hit is not None:
            self._cache.move_to_end(path)
            return hit
        try:
            image = read_image(path)
            image.flags.writeable = False  # shared by every part drawn from this file
            value: np.ndarray | str = image
        except FlawscopeError as exc:
            value = str(exc)
        self._cache[path] = value
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return value

    def draw(self, rng: np.random.Generator) -> Sample:
        """One part's sample: defective with probability ``defect_ratio``."""
        pool = self.defect if rng.random() < self.defect_ratio else self.good
        return pool[int(rng.integers(len(pool)))]

    def _frames(self) -> Generator[Frame, None, None]:
        rng = np.random.default_rng(self.seed)
        began = time.monotonic()
        index = 0
        while self.count is None or index < self.count:
            if self.rate > 0 and self._wait(began + index / self.rate - time.monotonic()):
                return
            if self.stopping:
                return
            sample = self.draw(rng)
            image = self._image(sample.path)
            meta = {
                "label": str(sample.label),
                "defect_type": sample.defect_type,
                "path": sample.path,
                "index": str(self.start + index),
            }
            part_id = f"{self.prefix}-{self.start + index:06d}"
            if self.drift is not None and not isinstance(image, str):
                meta["drift"] = f"{self.drift.kind}:{self.drift.amount * self.drift.strength(index):.6g}"
                image = self.drift.apply(image, index)
            if isinstance(image, str):
                yield Frame(part_id, None, time.time(), self.uri, meta, error=image)
            else:
                yield Frame(part_id, image, time.time(), self.uri, meta)
            index += 1


@register_source(
    "sim",
    path=True,
    options={
        "rate": Option("rate", float),
        "defect_ratio": Option("defect_ratio", float),
        "count": Option("count", parse_optional_int),
        "seed": Option("seed", int),
        "start": Option("start", int),
        "prefix": Option("prefix", str),
        "cache": Option("cache", int),
        "drift": Option("drift", str),
    },
    example="sim:///data/metal?rate=20&defect_ratio=0.1&count=1000&seed=0",
    summary="line simulator drawing parts from a dataset",
)
def open_sim(target: SourceTarget, **options: Any) -> SimSource:
    """Open ``sim:///dataset``."""
    return SimSource(target.location, uri=target.uri, **options)

"""Frames taken on a PLC's trigger: one frame of the camera's source per trigger, named by the PLC.

A station camera with ``trigger = "plc"`` wraps its source in a :class:`TriggeredSource`; the
OPC UA sink (``StartSingleJob`` or the ``Trigger`` tag) puts :class:`Trigger` s into the station's
:class:`TriggerHub`. Each trigger takes the next frame of the source, renamed with the PLC's part id;
the job's identity (job id, measurement id, recipe, product) rides in the frame's ``source`` as a
URI fragment (``sim:///parts#job=J7&meas=M1``), so the audit record of the part says which job
triggered it and the OPC UA result management can find it again. A trigger for which the source
gives no frame still becomes a part: an error frame, recorded as a reject.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, urlencode

from flawscope.acquire.base import Source, SourceHealth
from flawscope.types import Frame


@dataclass(frozen=True)
class Trigger:
    """One acquisition asked for by the PLC.

    Attributes:
        job_id: the vision system's id of the job (unique in the station's life).
        part_id: the PLC's part id ("" to let the station name the part by its job id).
        meas_id: the PLC's measurement id.
        recipe_id: external recipe id given with the trigger.
        product_id: product id given with the trigger.
        at: ``time.perf_counter()`` when the trigger arrived (for latency measurements).
    """

    job_id: str
    part_id: str = ""
    meas_id: str = ""
    recipe_id: str = ""
    product_id: str = ""
    at: float = 0.0


_FIELDS = {"job": "job_id", "meas": "meas_id", "recipe": "recipe_id", "product": "product_id"}


def trigger_fragment(trigger: Trigger) -> str:
    """``job=...&meas=...``: what a triggered frame's source URI carries after ``#``."""
    pairs = [(short, getattr(trigger, name)) for short, name in _FIELDS.items() if getattr(trigger, name)]
    return urlencode(pairs)


def trigger_of(source: str) -> dict[str, str]:
    """The job fields of a triggered record's ``source`` (``{}`` for a free-running one)."""
    _, sep, fragment = source.partition("#")
    if not sep:
        return {}
    return {_FIELDS[k]: v for k, v in parse_qsl(fragment) if k in _FIELDS}


class TriggerHub:
    """Triggers waiting for each camera (thread-safe; the OPC UA sinks put, the sources take)."""

    def __init__(self, cameras: list[str] | tuple[str, ...]) -> None:
        self._queues: dict[str, queue.Queue[Trigger | None]] = {c: queue.Queue() for c in cameras}
        self._counter = itertools.count(1)
        self._session = time.strftime("%Y%m%dT%H%M%S")
        self._lock = threading.Lock()

    @property
    def cameras(self) -> tuple[str, ...]:
        """Cameras that take triggers."""
        return tuple(self._queues)

    def new_job_id(self, camera: str) -> str:
        """A job id unique in this station's life: ``<camera>-<start time>-<n>``."""
        with self._lock:
            return f"{camera}-{self._session}-{next(self._counter)}"

    def put(self, camera: str, trigger: Trigger) -> None:
        """Queue a trigger for a camera.

        Raises:
            KeyError: the camera does not take PLC triggers.
        """
        self._queues[camera].put(trigger)

    def get(self, camera: str, timeout_s: float | None = None) -> Trigger | None:
        """The next trigger of a camera (None on timeout or when the hub is closed)."""
        try:
            return self._queues[camera].get(timeout=timeout_s)
        except queue.Empty:
            return None

    def pending(self, camera: str) -> int:
        """Triggers not yet taken by the camera."""
        return self._queues[camera].qsize()

    def close(self) -> None:
        """Wake every waiting source (they end)."""
        for q in self._queues.values():
            q.put(None)


class TriggeredSource(Source):
    """One frame of ``inner`` per trigger of ``camera`` in ``hub``, renamed by the trigger.

    Args:
        inner: the camera's own source (a simulator with ``rate=0``, a camera in software-trigger mode).
        hub: where the triggers come from.
        camera: the camera's name in the hub.
    """

    def __init__(self, inner: Source, hub: TriggerHub, camera: str) -> None:
        super().__init__(inner.uri)
        self.inner = inner
        self.hub = hub
        self.camera = camera

    def close(self) -> None:
        """Stop waiting for triggers and stop the inner source."""
        super().close()
        self.inner.close()
        self.hub.close()

    def health(self) -> SourceHealth:
        """The inner source's health."""
        return self.inner.health()

    def _frames(self) -> Generator[Frame, None, None]:
        frames = iter(self.inner)
        try:
            while not self.stopping:
                trigger = self.hub.get(self.camera, timeout_s=0.5)
                if trigger is None:
                    continue
                source = f"{self.inner.uri}#{trigger_fragment(trigger)}"
                part_id = trigger.part_id or trigger.job_id
                try:
                    frame = next(frames)
                except StopIteration:
                    yield Frame(part_id, None, time.time(), source, {}, error="the source has no more frames")
                    frames = iter(())
                    continue
                except Exception as exc:
                    yield Frame(part_id, None, time.time(), source, {}, error=f"acquisition failed: {exc}")
                    continue
                meta = {**frame.meta, "source_part_id": frame.part_id, "job_id": trigger.job_id}
                yield replace(frame, part_id=part_id, source=source, meta=meta)
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

"""A whole station in one process: one inspection line per camera, one forwarder per sink.

::

    camera A ─ line ─┐                      ┌─ forwarder ─ MQTT sink ─ broker
    camera B ─ line ─┼─ audit log (commit) ─┼─ forwarder ─ webhook sink ─ MES
                     │    = the outbox      └─ forwarder ─ OPC UA sink ─ PLC ─┐
                     └───────────── PLC triggers (cameras with trigger = "plc") ┘

Every camera's line commits its records to the one audit log and then hands them to the
forwarders, which never block it (:mod:`flawscope.integrate.outbox`). A stop request stops the
cameras, lets the forwarders deliver what was committed for up to ``drain_s``, writes their cursors
and closes the sinks; whatever is left is delivered by the next run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flawscope.acquire import Source, open_source
from flawscope.acquire.triggered import TriggeredSource, TriggerHub
from flawscope.audit import AuditLog
from flawscope.config import CameraConfig, StationConfig
from flawscope.errors import InputError
from flawscope.integrate.cursors import CursorStore
from flawscope.integrate.outbox import Forwarder
from flawscope.integrate.registry import Sink, SinkContext, make_sink
from flawscope.line import InspectorLike, LineStopped, LineSummary, run_line
from flawscope.monitor.alerts import station_monitor
from flawscope.station.status import StationStatus, write_status
from flawscope.types import InspectionRecord

logger = logging.getLogger(__name__)

InspectorLoader = Callable[[CameraConfig], InspectorLike]


def load_inspector(camera: CameraConfig) -> InspectorLike:
    """The deployed bundle of a camera, with its pinned thresholds.

    Raises:
        FlawscopeError: the bundle cannot be loaded or has no calibrated thresholds.
    """
    from flawscope.runtime import Inspector

    inspector = Inspector.load(
        camera.bundle,
        int8=camera.int8,
        threshold_version=camera.threshold_version,
        threads=camera.threads,
        trusted_keys=camera.trusted_keys,
        allow_unsigned=camera.allow_unsigned,
    )
    if inspector.thresholds is None:
        raise InputError(
            camera.bundle, f"camera {camera.name}: no calibrated thresholds; run 'flawscope calibrate'"
        )
    return inspector


@dataclass
class _Camera:
    config: CameraConfig
    source: Source
    inspector: InspectorLike
    summary: LineSummary | None = None
    error: BaseException | None = None
    thread: threading.Thread | None = None
    monitor: Any = None


@dataclass(frozen=True)
class StationSummary:
    """What a station run did.

    Attributes:
        cameras: each camera's final line summary.
        status: the final status snapshot (sinks included).
        errors: cameras whose line stopped on an error, with the error.
    """

    cameras: dict[str, LineSummary]
    status: StationStatus
    errors: dict[str, str] = field(default_factory=dict)


class Station:
    """Builds and runs the station a configuration describes.

    Args:
        config: the station configuration.
        inspector_loader: loads a camera's inspector (tests pass fakes; default :func:`load_inspector`).
        sources: sources to use instead of opening the cameras' URIs (tests), by camera name.

    Raises:
        InputError: the audit store, a bundle, a source or a sink cannot be set up (before anything
            starts).
    """

    def __init__(
        self,
        config: StationConfig,
        *,
        inspector_loader: InspectorLoader | None = None,
        sources: dict[str, Source] | None = None,
    ) -> None:
        self.config = config
        self.audit = AuditLog.open(config.station.audit, synchronous=config.station.audit_synchronous)
        self.cursors: CursorStore | None = None
        self.cameras: list[_Camera] = []
        self.forwarders: list[Forwarder] = []
        self.web: Any = None  # the running web app (``[web]``), while the station runs
        triggered = [c.name for c in config.cameras if c.trigger == "plc"]
        self.triggers = TriggerHub(triggered)
        try:
            # Cursor writes are not fsynced (synchronous=NORMAL, WAL): one lost in a power cut only
            # makes its sink re-send records, with the same ids (at least once), and the next record
            # commit (FULL) syncs it anyway. An fsync here held the write lock a line commit waits for.
            self.cursors = CursorStore(config.station.audit, synchronous="NORMAL")
            loader = inspector_loader or load_inspector
            for camera in config.cameras:
                given = (sources or {}).get(camera.name)
                source = given if given is not None else open_source(camera.source)
                if camera.trigger == "plc":
                    source = TriggeredSource(source, self.triggers, camera.name)
                inspector = loader(camera)
                # The drift monitor: its events are audit records the sinks deliver like results.
                monitor = station_monitor(
                    inspector, self.audit, config.record_station(camera.name), self._publish
                )
                self.cameras.append(_Camera(camera, source, inspector, monitor=monitor))
            for sink_config in config.sinks:
                if not sink_config.enabled:
                    continue
                context = SinkContext(
                    config, sink_config, self.triggers, config.station.audit, self.camera_problem
                )
                sink = make_sink(context)
                self.forwarders.append(
                    Forwarder(
                        sink,
                        self.audit,
                        self.cursors,
                        sink_config.delivery,
                        self._accept(sink_config.cameras),
                    )
                )
            if triggered and not any(getattr(f.sink, "takes_triggers", False) for f in self.forwarders):
                raise InputError(
                    config.path,
                    f"camera(s) {', '.join(triggered)} take PLC triggers but no enabled sink gives them "
                    "(add an opcua-server or opcua-client sink with triggers)",
                )
        except BaseException:
            self.close()
            raise
        self._stop = threading.Event()
        self._status_lock = threading.Lock()

    def _accept(self, cameras: tuple[str, ...]) -> Callable[[InspectionRecord], bool]:
        if not cameras:
            return lambda _record: True
        stations = {self.config.record_station(c) for c in cameras}
        return lambda record: record.station in stations

    def camera_problem(self, name: str) -> str:
        """What is wrong with a camera now: its source down, or its line stopped on an error."""
        for camera in self.cameras:
            if camera.config.name != name:
                continue
            if camera.error is not None:
                return f"the line stopped: {camera.error}"
            health = camera.source.health()
            if not health.connected:
                return f"the source {health.uri} is down: {health.last_error or 'reconnecting'}"
        return ""

    @property
    def sinks(self) -> list[Sink]:
        """The enabled sinks."""
        return [f.sink for f in self.forwarders]

    # ------------------------------------------------------------------------------- running

    def _publish(self, record: InspectionRecord) -> None:
        for forwarder in self.forwarders:
            forwarder.notify(record)

    def status(self, running: bool = True) -> StationStatus:
        """A snapshot of every camera and sink."""
        cameras = {c.config.name: c.summary for c in self.cameras if c.summary is not None}
        sources: dict[str, dict[str, Any]] = {}
        for camera in self.cameras:
            health = camera.source.health()
            sources[camera.config.name] = {
                "uri": health.uri,
                "connected": health.connected,
                "missed": health.missed,
                "reconnects": health.reconnects,
                "last_error": health.last_error,
            }
        return StationStatus(
            station=self.config.station.name,
            running=running,
            updated_at=time.time(),
            pid=os.getpid(),
            cameras=cameras,
            sinks={f.sink.name: f.status() for f in self.forwarders},
            sources=sources,
            drift={
                c.config.name: c.monitor.summary().to_dict() for c in self.cameras if c.monitor is not None
            },
        )

    def stop(self) -> None:
        """Ask the station to stop (thread-safe; also what SIGINT/SIGTERM handlers call)."""
        self._stop.set()

    def _run_camera(self, camera: _Camera) -> None:
        def on_status(summary: LineSummary) -> None:
            camera.summary = summary

        try:
            camera.summary = run_line(
                camera.source,
                camera.inspector,
                self.audit,
                station=self.config.record_station(camera.config.name),
                store_images=self.config.station.store_images,
                batch_size=camera.config.batch_size,
                queue_size=camera.config.queue_size,
                backpressure=camera.config.backpressure,
                on_commit=self._publish,  # forwarder.notify never blocks
                on_status=on_status,
                stop_event=self._stop,
                status_interval_s=min(0.5, self.config.station.status_interval_s),
                monitor=camera.monitor,
            )
        except LineStopped as exc:
            camera.summary = exc.summary
            camera.error = exc
            logger.error("camera %s: %s", camera.config.name, exc)
        except BaseException as exc:  # keep the other cameras' records safe: stop them cleanly
            camera.error = exc
            logger.exception("camera %s failed", camera.config.name)
        finally:
            if camera.error is not None:
                self._stop.set()

    def run(
        self,
        *,
        on_status: Callable[[StationStatus], object] | None = None,
        drain_s: float = 10.0,
        write_status_file: bool = True,
        sinks_open_s: float = 30.0,
    ) -> StationSummary:
        """Start the sinks and cameras, run until every source ends or :meth:`stop`, then drain.

        Args:
            on_status: called about every ``status_interval_s`` with a :class:`StationStatus`.
            drain_s: after the cameras stop, how long the sinks may take to deliver what is committed.
            write_status_file: keep the status file up to date.
            sinks_open_s: the cameras start once every sink made its first attempt to connect (an
                OPC UA server is listening before parts flow), or after this long.

        Returns:
            The summary (a camera whose line stopped on an error is listed in ``errors``).
        """
        path = self.config.status_path
        # The station's threads hand each part on (source, inference, commit, publish, sink, the
        # OPC UA loop); a thread back from a socket or a lock waits for the GIL up to the switch
        # interval (5 ms by default) while another runs Python. 1 ms bounds that wait per hand-over.
        switch = sys.getswitchinterval()
        sys.setswitchinterval(min(switch, 0.001))
        self.web = self._start_web()  # first: an unusable [web] stops the run before parts flow
        for forwarder in self.forwarders:
            forwarder.start()
        deadline = time.monotonic() + sinks_open_s
        for forwarder in self.forwarders:
            forwarder.wait_open(max(0.0, deadline - time.monotonic()))
        for camera in self.cameras:
            camera.thread = threading.Thread(
                target=self._run_camera, args=(camera,), name=f"camera-{camera.config.name}", daemon=True
            )
            camera.thread.start()
        interval = self.config.station.status_interval_s
        try:
            while any(c.thread is not None and c.thread.is_alive() for c in self.cameras):
                self._stop.wait(interval)
                snapshot = self.status(running=True)
                self._emit(snapshot, on_status, path if write_status_file else None)
                if self._stop.is_set():
                    break
            for camera in self.cameras:
                if camera.thread is not None:
                    camera.thread.join()
        finally:
            self._stop.set()
            # Let the sinks deliver what was committed, still reporting how they are doing.
            deadline = time.monotonic() + drain_s
            for forwarder in self.forwarders:
                while time.monotonic() < deadline and not forwarder.drain(
                    min(interval, deadline - time.monotonic())
                ):
                    self._emit(self.status(running=True), on_status, path if write_status_file else None)
            for forwarder in self.forwarders:
                forwarder.stop()
            if self.web is not None:
                self.web.stop()
                self.web = None
        sys.setswitchinterval(switch)
        final = self.status(running=False)
        self._emit(final, on_status, path if write_status_file else None)
        errors = {c.config.name: str(c.error) for c in self.cameras if c.error is not None}
        cameras = {name: summary for name, summary in final.cameras.items()}
        return StationSummary(cameras, final, errors)

    def _start_web(self) -> Any:
        """The ``[web]`` app in a thread of this process, showing the sinks' live states (or None).

        Raises:
            InputError: an unusable web setting (the image store missing, the port taken).
        """
        if self.config.web is None:
            return None
        from flawscope.web import start_server

        def sinks() -> list[dict[str, Any]]:
            return [dataclasses.asdict(f.status()) for f in self.forwarders]

        return start_server(self.config.web.checked(), sinks=sinks)

    def _emit(
        self, snapshot: StationStatus, on_status: Callable[[StationStatus], object] | None, path: Any
    ) -> None:
        if on_status is not None:
            try:
                on_status(snapshot)
            except Exception:
                logger.exception("status callback failed (the station goes on)")
        if path is not None:
            try:
                write_status(path, snapshot)
            except OSError as exc:
                logger.warning("cannot write the status file %s (%s)", path, exc)

    def close(self) -> None:
        """Close the web app (if still up), the sources, the cursor store and the audit log."""
        if self.web is not None:
            self.web.stop()
            self.web = None
        for camera in self.cameras:
            camera.source.close()
        if self.cursors is not None:
            self.cursors.close()
        self.audit.close()

    def __enter__(self) -> Station:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def run_station(config: StationConfig, **options: Any) -> StationSummary:
    """Build, run and close a station (see :class:`Station` and :meth:`Station.run`).

    Raises:
        InputError: the station cannot be set up.
    """
    with Station(config) as station:
        return station.run(**options)

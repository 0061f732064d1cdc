"""Helpers of the integration tests: a fake inspector, array sources and station files."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from flawscope.acquire import Source
from flawscope.types import Frame, Outcome, Provenance, Verdict


class FakeInspector:
    """Score = mean brightness / 255; fail above 0.5; optionally slow."""

    model_hash = "f" * 64
    version = "fake.t3"
    thresholds = SimpleNamespace(version=3)
    provenance = Provenance(model_hash, version, 3, threshold_sha256="1" * 64, graph_sha256="2" * 64)

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    def inspect_many(self, images: Sequence[np.ndarray | None]) -> list[Verdict]:
        if self.delay_s:
            time.sleep(self.delay_s * len(images))
        verdicts = []
        for image in images:
            if image is None:
                verdicts.append(Verdict(Outcome.ERROR, float("nan"), float("nan"), reason="no image"))
                continue
            score = float(np.mean(image)) / 255.0
            outcome = Outcome.FAIL if score > 0.5 else Outcome.PASS
            verdicts.append(
                Verdict(outcome, score, score / 0.5, threshold_version=3, model_hash=self.model_hash)
            )
        return verdicts


class ArraySource(Source):
    """``n`` frames (brightness i * 7 % 256) at ``rate`` per second (0: as fast as taken)."""

    def __init__(
        self, n: int | None, rate: float = 0.0, prefix: str = "p", uri: str = "test://arrays", start: int = 0
    ) -> None:
        super().__init__(uri)
        self.n = n
        self.rate = rate
        self.prefix = prefix
        self.start = start

    def _frames(self) -> Iterator[Frame]:
        i = self.start
        began = time.monotonic()
        while self.n is None or i < self.start + self.n:
            if self.rate and self._wait(began + (i - self.start) / self.rate - time.monotonic()):
                return
            if self.stopping:
                return
            yield Frame(
                f"{self.prefix}{i:05d}", np.full((16, 16), i * 7 % 256, np.uint8), time.time(), self.uri
            )
            i += 1


def write_station(
    folder: Path, sinks: str = "", cameras: Sequence[str] = ("top",), extra: str = "", camera_extra: str = ""
) -> Path:
    """A station.toml with fake bundles (the tests pass an inspector loader) and the given sink tables."""
    folder.mkdir(parents=True, exist_ok=True)
    camera_tables = "\n".join(
        f'[[camera]]\nname = "{c}"\nsource = "sim:///unused"\nbundle = "bundle-{c}"\nbatch_size = 4\n'
        f"{camera_extra}\n"
        for c in cameras
    )
    text = textwrap.dedent(
        """\
        [station]
        name = "press-3"
        enterprise = "acme"
        site = "lyon"
        line = "line-2"
        audit = "sqlite:///audit.db"
        status_interval_s = 0.2
        """
    )
    path = folder / "station.toml"
    path.write_text(text + extra + "\n" + camera_tables + "\n" + textwrap.dedent(sinks))
    return path


def fake_loader(_camera: object) -> FakeInspector:
    return FakeInspector()


class Background:
    """Runs a station (``Station.run``) or a PLC simulator in a thread; ``result()`` waits for it."""

    def __init__(self, target, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        import threading

        self.value = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.value = target(*args, **kwargs)
            except BaseException as exc:  # reported by result()
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self, timeout_s: float = 60.0):  # type: ignore[no-untyped-def]
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            raise TimeoutError(f"still running after {timeout_s} s")
        if self.error is not None:
            raise self.error
        return self.value


def run_plcsim(options):  # type: ignore[no-untyped-def]
    """Start a PLC simulator in its own thread and event loop; returns (sim, background, loop)."""
    import asyncio

    from flawscope.integrate.plcsim import PlcSim

    loop = asyncio.new_event_loop()
    holder: dict = {}

    def main():  # type: ignore[no-untyped-def]
        asyncio.set_event_loop(loop)

        async def go():  # type: ignore[no-untyped-def]
            holder["sim"] = sim = PlcSim(options)
            return await sim.run()

        return loop.run_until_complete(go())

    background = Background(main)
    deadline = time.monotonic() + 10
    while "sim" not in holder and time.monotonic() < deadline:
        time.sleep(0.01)
    sim = holder["sim"]

    def stop() -> None:
        loop.call_soon_threadsafe(sim.stop)

    sim.stop_threadsafe = stop
    return sim, background

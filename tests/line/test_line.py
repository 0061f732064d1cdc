"""The inspection line with a fake, deterministic inspector, real files and a real SQLite audit log."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from flawscope.acquire import Source, WatchSource, open_source
from flawscope.audit import AuditLog
from flawscope.data.imageio import sha256_file
from flawscope.errors import InputError
from flawscope.line import DROPPED_REASON, LineStopped, LineSummary, run_line
from flawscope.types import Frame, InspectionRecord, Outcome, Provenance, Verdict


class FakeInspector:
    """Score = mean brightness / 255; fail above 0.5. Optionally slow, or failing on some calls."""

    model_hash = "f" * 64
    version = "fake.t3"
    thresholds = SimpleNamespace(version=3)
    provenance = Provenance(model_hash, version, 3, threshold_sha256="1" * 64, graph_sha256="2" * 64)

    def __init__(self, delay_s: float = 0.0, fail_calls: Sequence[int] = ()) -> None:
        self.delay_s = delay_s
        self.fail_calls = set(fail_calls)
        self.calls = 0
        self.batch_sizes: list[int] = []

    def inspect_many(self, images: Sequence[np.ndarray | None]) -> list[Verdict]:
        self.calls += 1
        self.batch_sizes.append(len(images))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.calls in self.fail_calls:
            raise RuntimeError("simulated inference crash")
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
    """Frames made from arrays (brightness i * 7 % 256), endless when ``n`` is None."""

    def __init__(self, n: int | None, size: tuple[int, int] = (24, 24)) -> None:
        super().__init__("test://arrays")
        self.n = n
        self.size = size

    def _frames(self) -> Iterator[Frame]:
        i = 0
        while self.n is None or i < self.n:
            if self.stopping:
                return
            yield Frame(f"p{i:05d}", np.full(self.size, i * 7 % 256, np.uint8), time.time(), self.uri)
            i += 1


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    log = AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}")
    yield log
    log.close()


def part_folder(root: Path, n: int, corrupt: Sequence[int] = ()) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = root / f"part{i:03d}.png"
        if i in corrupt:
            path.write_bytes(b"\x89PNG\r\n\x1a\n broken")
        else:
            cv2.imwrite(str(path), np.full((20, 20), (i * 37) % 256, np.uint8))
    return root


def logged(audit: AuditLog) -> list[InspectionRecord]:
    return list(audit.records())


def test_every_frame_gives_exactly_one_record_with_its_stored_image(tmp_path: Path, audit: AuditLog) -> None:
    folder = part_folder(tmp_path / "parts", 30, corrupt=(4, 17))
    published: list[InspectionRecord] = []
    summary = run_line(
        open_source(folder),
        FakeInspector(),
        audit,
        station="st1",
        store_images=tmp_path / "images",
        publishers=[published.append],
        batch_size=4,
    )

    records = logged(audit)
    ids = [r.part_id for r in records]
    assert sorted(ids) == [f"part{i:03d}" for i in range(30)]  # no loss, no duplicate
    assert summary.acquired == summary.recorded == summary.published == 30
    assert audit.verify().ok
    outcomes = {r.part_id: r.outcome for r in records}
    assert outcomes["part004"] is Outcome.ERROR and outcomes["part017"] is Outcome.ERROR
    assert {outcomes[f"part{i:03d}"] for i in (0, 1, 2)} == {Outcome.PASS}
    assert outcomes["part005"] is Outcome.FAIL  # brightness 185
    assert summary.counts["error"] == 2 and sum(summary.counts.values()) == 30
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    for record in records:
        assert record.station == "st1" and record.model_version == "fake.t3"
        assert (record.threshold_sha256, record.graph_sha256) == ("1" * 64, "2" * 64)
        stored = Path(record.image_uri)
        assert stored.parent.parent == (tmp_path / "images").absolute() and stored.parent.name <= today
        assert stored.name == f"{record.part_id}.png" and sha256_file(stored) == record.image_sha256
        if record.outcome is not Outcome.ERROR:
            assert record.threshold_version == 3 and record.latency_ms >= 0
    assert "part004.png" in next(r.reason for r in records if r.part_id == "part004")
    assert [(r.seq, r.part_id) for r in published] == [(r.seq, r.part_id) for r in records]


def test_batches_do_not_wait_to_fill_up(audit: AuditLog) -> None:
    class Trickle(ArraySource):
        def _frames(self) -> Iterator[Frame]:
            for frame in super()._frames():
                time.sleep(0.05)
                yield frame

    inspector = FakeInspector()
    summary = run_line(Trickle(6), inspector, audit, station="st", batch_size=8)
    assert summary.recorded == 6
    assert max(inspector.batch_sizes) < 8  # parts were inspected as they came, not held for a batch


def test_published_records_are_already_in_the_log(audit: AuditLog) -> None:
    problems: list[str] = []

    def check(record: InspectionRecord) -> None:
        stored = audit.get(record.seq) if record.seq is not None else None
        if stored is None or stored.part_id != record.part_id or stored.record_hash != record.record_hash:
            problems.append(record.part_id)

    summary = run_line(
        ArraySource(50), FakeInspector(), audit, station="st", publishers=[check], batch_size=3
    )
    assert summary.published == 50 and problems == []


def test_drop_policy_records_dropped_parts_as_not_inspected(audit: AuditLog) -> None:
    summary = run_line(
        ArraySource(60),
        FakeInspector(delay_s=0.02),
        audit,
        station="st",
        batch_size=1,
        queue_size=2,
        backpressure="drop",
    )
    records = logged(audit)
    assert Counter(r.part_id for r in records) == Counter(f"p{i:05d}" for i in range(60))
    dropped = [r for r in records if r.outcome is Outcome.NOT_INSPECTED]
    assert dropped and all(r.reason == DROPPED_REASON for r in dropped)
    assert summary.dropped == len(dropped) == summary.counts["not_inspected"]
    assert summary.recorded == 60


def test_block_policy_drops_nothing(audit: AuditLog) -> None:
    summary = run_line(
        ArraySource(40), FakeInspector(delay_s=0.01), audit, station="st", batch_size=2, queue_size=2
    )
    assert summary.dropped == 0 and summary.counts["not_inspected"] == 0 and summary.recorded == 40


def test_failing_inspector_gives_errors_and_the_line_goes_on(audit: AuditLog) -> None:
    inspector = FakeInspector(fail_calls=(2, 3))
    summary = run_line(ArraySource(24), inspector, audit, station="st", batch_size=4, queue_size=64)
    records = logged(audit)
    errors = [r for r in records if r.outcome is Outcome.ERROR]
    assert len(records) == 24 and summary.recorded == 24
    assert errors and all("inference failed: simulated inference crash" in r.reason for r in errors)
    assert len(errors) == sum(inspector.batch_sizes[1:3])
    assert any(r.outcome is not Outcome.ERROR for r in records[-4:])  # it recovered


def test_unwritable_image_store_stops_the_line_loudly(tmp_path: Path, audit: AuditLog) -> None:
    store = tmp_path / "images"
    store.mkdir()
    now = datetime.now(UTC)
    for day in (now, now + timedelta(days=1)):  # a file where today's image folder must go
        (store / day.strftime("%Y-%m-%d")).write_text("in the way")
    with pytest.raises(LineStopped, match="image store") as stopped:
        run_line(ArraySource(None), FakeInspector(), audit, station="st", store_images=store, batch_size=4)
    summary = stopped.value.summary
    records = logged(audit)
    assert stopped.value.unrecorded == ()
    assert summary.acquired == len(records) == summary.recorded  # every part taken is recorded
    assert all(r.image_uri == "" and "image not stored" in r.reason for r in records)
    assert len({r.part_id for r in records}) == len(records)


def test_unwritable_store_at_start_is_an_input_error(tmp_path: Path, audit: AuditLog) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not writable"):
        run_line(
            ArraySource(3), FakeInspector(), audit, station="st", store_images=tmp_path / "file" / "images"
        )
    assert audit.count() == 0


def test_audit_failure_stops_the_line_and_names_unrecorded_parts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    audit = AuditLog.open(url)
    published: list[str] = []

    def publish_then_break(record: InspectionRecord) -> None:
        published.append(record.part_id)
        if len(published) == 5:
            audit.close()  # every later append fails with AuditWriteError

    with pytest.raises(LineStopped, match="audit log") as stopped:
        run_line(
            ArraySource(None),
            FakeInspector(delay_s=0.005),
            audit,
            station="st",
            batch_size=5,
            publishers=[publish_then_break],
        )
    error = stopped.value
    with AuditLog.open(url, read_only=True) as reopened:
        assert reopened.verify().ok
        in_log = [r.part_id for r in reopened.records()]
    assert error.unrecorded and "NOT recorded" in str(error)
    assert set(published) <= set(in_log)  # nothing published that is not in the log
    assert not set(error.unrecorded) & set(in_log)
    assert error.summary.acquired == len(in_log) + len(error.unrecorded)  # every part accounted for


def test_stop_event_finishes_the_parts_in_flight(audit: AuditLog) -> None:
    stop = threading.Event()
    statuses: list[LineSummary] = []

    def stop_after_ten(record: InspectionRecord) -> None:
        if record.seq == 10:
            stop.set()

    summary = run_line(
        ArraySource(None),
        FakeInspector(delay_s=0.01),
        audit,
        station="st",
        batch_size=4,
        queue_size=16,
        publishers=[stop_after_ten],
        stop_event=stop,
        on_status=statuses.append,
        status_interval_s=0.05,
    )
    records = logged(audit)
    assert summary.stop_reason == "stop requested"
    assert len(records) >= 10 and summary.acquired == summary.recorded == len(records) == summary.published
    assert all(r.outcome in (Outcome.PASS, Outcome.FAIL) for r in records)  # finished, not abandoned
    assert statuses[-1] == summary and not summary.running
    assert any(s.running for s in statuses)
    assert (
        summary.stages["infer"].n > 0
        and summary.stages["end_to_end"].p99_ms >= summary.stages["infer"].mean_ms
    )


def test_stop_event_ends_a_line_waiting_on_an_empty_watched_folder(tmp_path: Path, audit: AuditLog) -> None:
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    summary = run_line(
        WatchSource(tmp_path, poll_s=0.02), FakeInspector(), audit, station="st", stop_event=stop
    )
    assert time.monotonic() - started < 3 and summary.recorded == 0


def test_a_failing_source_stops_the_line_after_recording_what_it_gave(audit: AuditLog) -> None:
    class Breaks(ArraySource):
        def _frames(self) -> Iterator[Frame]:
            yield from ArraySource(3)._frames()
            raise InputError("usb://9", "stream lost; gave up after 5 reconnection attempts")

    with pytest.raises(LineStopped, match="stream lost") as stopped:
        run_line(Breaks(None), FakeInspector(), audit, station="st")
    assert [r.part_id for r in logged(audit)] == ["p00000", "p00001", "p00002"]
    assert stopped.value.unrecorded == () and stopped.value.summary.recorded == 3
    assert json.loads(json.dumps(stopped.value.summary.to_dict()))["recorded"] == 3


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"backpressure": "maybe"}, "backpressure"),
        ({"batch_size": 0}, "batch_size"),
        ({"station": " "}, "station"),
    ],
)
def test_invalid_settings(audit: AuditLog, kwargs: dict, field: str) -> None:
    options = {"station": "st", **kwargs}
    with pytest.raises(InputError, match=field):
        run_line(ArraySource(1), FakeInspector(), audit, **options)


class MapInspector(FakeInspector):
    """FakeInspector that also gives a map (the image's brightness / 255) and a review band (0.3-0.5)."""

    def inspect_many(self, images: Sequence[np.ndarray | None]) -> list[Verdict]:
        verdicts = []
        for image, verdict in zip(images, super().inspect_many(images), strict=True):
            if image is None:
                verdicts.append(verdict)
                continue
            outcome = Outcome.REVIEW if verdict.outcome is Outcome.PASS and verdict.score >= 0.3 else None
            amap = image.astype(np.float32) / 255.0
            verdicts.append(
                dataclasses.replace(verdict, outcome=outcome or verdict.outcome, anomaly_map=amap)
            )
        return verdicts


def test_maps_are_kept_for_review_and_fail_and_for_the_pass_sample(tmp_path: Path, audit: AuditLog) -> None:
    from flawscope.line.records import in_review_sample
    from flawscope.line.store import map_path, read_map

    summary = run_line(
        ArraySource(60, size=(40, 30)),
        MapInspector(),
        audit,
        station="st",
        store_images=tmp_path / "images",
        review_sample=0.3,
    )
    records = logged(audit)
    assert summary.recorded == 60
    kept = {r.outcome: 0 for r in records}
    sampled = 0
    for record in records:
        amap = read_map(record.image_uri)
        expected = record.outcome in (Outcome.REVIEW, Outcome.FAIL) or (
            record.outcome is Outcome.PASS and in_review_sample(record.image_sha256, 0.3)
        )
        assert (amap is not None) == expected, record
        assert map_path(record.image_uri).parent.name == "maps"
        if amap is not None:
            kept[record.outcome] += 1
            sampled += record.outcome is Outcome.PASS
            assert amap.shape == (40, 30)
            # Stored divided by the reject threshold (0.5): brightness/255/0.5, to 2e-4 relative.
            brightness = float(np.mean(cv2.imread(record.image_uri, cv2.IMREAD_UNCHANGED))) / 255
            assert np.allclose(amap, brightness / 0.5, rtol=3e-4, atol=3e-4)
    assert kept[Outcome.REVIEW] > 0 and kept[Outcome.FAIL] > 0
    assert 0 < sampled < sum(r.outcome is Outcome.PASS for r in records)


def test_no_maps_without_an_image_store_or_when_not_asked(tmp_path: Path, audit: AuditLog) -> None:
    summary = run_line(
        ArraySource(20), MapInspector(), audit, station="st", store_images=tmp_path / "i", keep_maps=()
    )
    assert summary.recorded == 20
    assert not any((tmp_path / "i").rglob("maps/*.png"))


def test_review_sample_is_a_stable_fraction_of_hashes() -> None:
    import hashlib

    from flawscope.line.records import in_review_sample

    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20000)]
    picked = [d for d in digests if in_review_sample(d, 0.05)]
    assert 0.04 < len(picked) / len(digests) < 0.06
    assert picked == [d for d in digests if in_review_sample(d, 0.05)]
    assert not any(in_review_sample(d, 0.0) for d in digests[:100])
    assert all(in_review_sample(d, 1.0) for d in digests[:100])
    assert not in_review_sample("", 0.5) and not in_review_sample("zz" * 32, 0.5)

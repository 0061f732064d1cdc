"""The outbox: ordered, at-least-once delivery from the audit log through durable cursors."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from factory_helpers import ArraySource, FakeInspector

from flawscope.audit import AuditLog
from flawscope.config import DeliveryConfig, load_config
from flawscope.integrate.cursors import CursorStore
from flawscope.integrate.outbox import Forwarder
from flawscope.integrate.registry import DeliveryError, RecordRefused, Sink, SinkDisabled
from flawscope.line import run_line
from flawscope.types import InspectionRecord, Outcome

FAST = DeliveryConfig(
    retry_initial_s=0.01, retry_max_s=0.05, cursor_interval_s=0.0, poll_s=0.05, max_batch=16
)


class Recorder(Sink):
    """Takes records into a list; ``behaviour(records)`` may raise or return a count first."""

    type = "recorder"

    def __init__(
        self, name: str = "rec", behaviour: Callable[[Sequence[InspectionRecord]], Any] | None = None
    ):
        super().__init__(name, None, None)  # type: ignore[arg-type]
        self.got: list[InspectionRecord] = []
        self.behaviour = behaviour
        self.opened = 0

    def open(self) -> None:
        self.opened += 1

    def deliver(self, records: Sequence[InspectionRecord]) -> int:
        if self.behaviour is not None:
            result = self.behaviour(records)
            if isinstance(result, int):
                self.got.extend(records[:result])
                return result
        self.got.extend(records)
        return len(records)


def make_records(n: int, start: int = 0, station: str = "press-3/top") -> list[InspectionRecord]:
    return [
        InspectionRecord(
            part_id=f"p{start + i:05d}", station=station, acquired_at=time.time(), outcome=Outcome.PASS
        )
        for i in range(n)
    ]


@pytest.fixture
def store(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    audit = AuditLog.open(url)
    cursors = CursorStore(url)
    yield audit, cursors
    cursors.close()
    audit.close()


def wait(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def seqs(records: Sequence[InspectionRecord]) -> list[int]:
    return [r.seq or 0 for r in records]


def test_records_are_delivered_in_order_from_memory_and_from_the_log(store) -> None:
    audit, cursors = store
    audit.append_many(make_records(5))  # committed before the sink existed: not its business
    sink = Recorder()
    forwarder = Forwarder(sink, audit, cursors, FAST)
    forwarder.start()
    for batch in (make_records(7, 5), make_records(9, 12)):
        for record in audit.append_many(batch):
            forwarder.notify(record)
    audit.append_many(make_records(4, 21))  # never handed over: found by polling the log
    assert wait(lambda: len(sink.got) == 20)
    forwarder.stop()
    assert seqs(sink.got) == list(range(6, 26))
    assert cursors.state("rec").seq == 25  # type: ignore[union-attr]


def test_a_restarted_forwarder_resumes_at_its_durable_cursor(store) -> None:
    audit, cursors = store
    first = Recorder()
    forwarder = Forwarder(first, audit, cursors, FAST)
    forwarder.start()
    audit.append_many(make_records(10))
    assert wait(lambda: len(first.got) == 10)
    forwarder.stop()
    audit.append_many(make_records(5, 10))  # committed while the station was down
    second = Recorder()
    again = Forwarder(second, audit, cursors, FAST)
    again.start()
    assert wait(lambda: len(second.got) == 5)
    again.stop()
    assert seqs(second.got) == [11, 12, 13, 14, 15]


def test_a_failing_peer_is_retried_visibly_and_drains_in_order(store) -> None:
    audit, cursors = store
    down = threading.Event()
    down.set()

    def behaviour(records: Sequence[InspectionRecord]) -> Any:
        if down.is_set():
            raise DeliveryError("sink rec: peer 127.0.0.1:9 refused the connection")
        return None

    sink = Recorder(behaviour=behaviour)
    forwarder = Forwarder(sink, audit, cursors, FAST)
    forwarder.start()
    for record in audit.append_many(make_records(30)):
        forwarder.notify(record)
    assert wait(lambda: forwarder.status().failures >= 3)
    status = forwarder.status()
    assert status.state == "retrying" and status.backlog == 30 and status.last_delivered_seq == 0
    assert "refused the connection" in status.last_error and sink.got == []
    down.clear()
    assert wait(lambda: len(sink.got) == 30)
    forwarder.stop()
    final = forwarder.status()
    assert final.backlog == 0 and final.last_error == "" and seqs(sink.got) == list(range(1, 31))


def test_a_partial_delivery_keeps_order_and_resends_only_the_rest(store) -> None:
    audit, cursors = store
    calls: list[list[int]] = []

    def behaviour(records: Sequence[InspectionRecord]) -> Any:
        calls.append(seqs(records))
        if len(calls) == 1:
            raise DeliveryError("sink rec: connection lost", delivered=3)
        return None

    sink = Recorder(behaviour=behaviour)
    forwarder = Forwarder(sink, audit, cursors, FAST)
    forwarder.start()
    for record in audit.append_many(make_records(8)):
        forwarder.notify(record)
    assert wait(lambda: len(sink.got) >= 5)
    forwarder.stop()
    assert calls[1][0] == 4  # the three acknowledged ones are not sent again
    assert seqs(sink.got) == [4, 5, 6, 7, 8]


def test_refused_records_go_to_the_dead_letters_and_delivery_goes_on(store) -> None:
    audit, cursors = store

    def behaviour(records: Sequence[InspectionRecord]) -> Any:
        for k, record in enumerate(records):
            if record.seq == 4:
                if k:
                    return k
                raise RecordRefused(4, "HTTP 422: unknown part")
        return None

    sink = Recorder(behaviour=behaviour)
    forwarder = Forwarder(sink, audit, cursors, FAST)
    forwarder.start()
    for record in audit.append_many(make_records(6)):
        forwarder.notify(record)
    assert wait(lambda: len(sink.got) == 5)
    forwarder.stop()
    assert seqs(sink.got) == [1, 2, 3, 5, 6]
    assert cursors.dead_letters("rec") == [(4, "HTTP 422: unknown part")]
    assert forwarder.status().dead_letters == 1


def test_a_disabled_sink_dead_letters_everything_until_replay(store, tmp_path: Path) -> None:
    audit, cursors = store

    def behaviour(records: Sequence[InspectionRecord]) -> Any:
        if any(r.seq == 3 for r in records):
            raise SinkDisabled("sink rec: endpoint answered 410 Gone")
        return None

    sink = Recorder(behaviour=behaviour)
    forwarder = Forwarder(sink, audit, cursors, FAST)
    forwarder.start()
    for record in audit.append_many(make_records(2)):
        forwarder.notify(record)
    assert wait(lambda: len(sink.got) == 2)
    for record in audit.append_many(make_records(5, 2)):
        forwarder.notify(record)
    assert wait(lambda: forwarder.status().dead_letters == 5)
    status = forwarder.status()
    assert status.state == "disabled" and "410 Gone" in status.last_error and status.backlog == 0
    assert cursors.state("rec").disabled  # type: ignore[union-attr]
    cursors.enable("rec")  # what 'flawscope sink replay' does first
    sink.behaviour = None
    assert wait(lambda: forwarder.status().state != "disabled")
    for record in audit.append_many(make_records(1, 7)):
        forwarder.notify(record)
    assert wait(lambda: len(sink.got) == 3)
    forwarder.stop()
    assert seqs(sink.got) == [1, 2, 8]
    assert [s for s, _ in cursors.dead_letters("rec")] == [3, 4, 5, 6, 7]


def test_records_older_than_give_up_after_go_to_the_dead_letters(store) -> None:
    audit, cursors = store
    sink = Recorder(behaviour=lambda records: (_ for _ in ()).throw(DeliveryError("sink rec: down")))
    config = DeliveryConfig(**{**FAST.__dict__, "give_up_after_s": 0.3})
    forwarder = Forwarder(sink, audit, cursors, config)
    forwarder.start()
    for record in audit.append_many(make_records(4)):
        forwarder.notify(record)
    assert wait(lambda: forwarder.status().dead_letters == 4, timeout_s=5)
    forwarder.stop()
    reasons = [r for _, r in cursors.dead_letters("rec")]
    assert all(r.startswith("not delivered within 0.3 s (sink rec: down)") for r in reasons)


def test_records_of_other_cameras_are_passed_over(store) -> None:
    audit, cursors = store
    sink = Recorder()
    forwarder = Forwarder(sink, audit, cursors, FAST, accept=lambda r: r.station == "press-3/top")
    forwarder.start()
    mixed = make_records(3) + make_records(3, 3, station="press-3/side") + make_records(2, 6)
    for record in audit.append_many(mixed):
        forwarder.notify(record)
    audit.append_many(make_records(50, 8, station="press-3/side"))
    assert wait(lambda: forwarder.status().last_delivered_seq == 58)
    forwarder.stop()
    assert seqs(sink.got) == [1, 2, 3, 7, 8]


def test_a_slow_peer_never_slows_the_line(tmp_path: Path) -> None:
    """The line finishes at its own speed; the sink's backlog is visible and drains afterwards."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    audit = AuditLog.open(url)
    cursors = CursorStore(url)
    sink = Recorder(behaviour=lambda records: time.sleep(0.02 * len(records)))  # 50 records/s at most
    config = DeliveryConfig(max_batch=1, poll_s=0.05, cursor_interval_s=0.1)
    forwarder = Forwarder(sink, audit, cursors, config)
    forwarder.start()
    summary = run_line(
        ArraySource(200), FakeInspector(), audit, station="press-3/top", publishers=[forwarder.notify]
    )
    assert summary.recorded == 200
    # The line finished with most of its records still waiting for the sink: it did not wait for it.
    assert forwarder.status().backlog > 100
    assert forwarder.drain(30)
    forwarder.stop()
    assert seqs(sink.got) == list(range(1, 201))
    cursors.close()
    audit.close()


def test_replay_resends_dead_letters_with_their_ids(tmp_path: Path) -> None:
    from factory_helpers import write_station

    from flawscope.integrate.replay import replay
    from flawscope.integrate.webhook import WebhookSink

    config = load_config(
        write_station(
            tmp_path,
            '[sink.mes]\ntype = "webhook"\nurl = "http://127.0.0.1:9/x"\n'
            'secret = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="\n',
        )
    )
    audit = AuditLog.open(config.station.audit)
    cursors = CursorStore(config.station.audit)
    cursors.start("mes", 0)
    records = audit.append_many(make_records(6))
    cursors.advance("mes", 6, [(2, "HTTP 500"), (5, "HTTP 500")])
    cursors.disable("mes", "410 Gone")
    sent: list[int] = []

    def fake_deliver(self: WebhookSink, batch: Sequence[InspectionRecord]) -> int:
        sent.extend(seqs(batch))
        return len(batch)

    original = WebhookSink.deliver
    WebhookSink.deliver = fake_deliver  # type: ignore[method-assign]
    try:
        result = replay(config, "mes", 3)
        assert sent == [5] and result.sent == 1 and result.remaining_dead_letters == 1
        assert cursors.dead_letters("mes") == [(2, "HTTP 500")]
        assert cursors.state("mes").disabled == ""  # type: ignore[union-attr]
        sent.clear()
        result = replay(config, "mes", 1, include_delivered=True)
        assert sent == seqs(records) and result.remaining_dead_letters == 0
    finally:
        WebhookSink.deliver = original  # type: ignore[method-assign]
        cursors.close()
        audit.close()

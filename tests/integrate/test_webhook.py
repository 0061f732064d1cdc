"""Webhooks against a real HTTP receiver on 127.0.0.1: signatures, retries, Retry-After, 410, hangs."""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from pathlib import Path

import jsonschema
import pytest
from factory_helpers import ArraySource, fake_loader
from factory_peers import WebhookReceiver

from flawscope.integrate.payload import schema_path
from flawscope.integrate.webhook import decode_secret, retry_after, sign, verify
from flawscope.station import Station

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
KEY = decode_secret(SECRET)


def sink_table(url: str, **extra: object) -> str:
    lines = [f'[sink.mes]\ntype = "webhook"\nurl = "{url}"\nsecret = "{SECRET}"\ntimeout_s = 0.5']
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    lines.append("[sink.mes.delivery]\nretry_initial_s = 0.05\nretry_max_s = 0.2\ncursor_interval_s = 0.05")
    return "\n".join(lines) + "\n"


def run(config, n: int, rate: float = 0.0, drain_s: float = 15.0):
    with Station(config, inspector_loader=fake_loader, sources={"top": ArraySource(n, rate)}) as station:
        summary = station.run(drain_s=drain_s)
    return summary


def test_signature_is_the_standard_webhooks_one() -> None:
    # Known answer from the Standard Webhooks reference libraries' test vector.
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    signature = sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    headers = {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330"}
    assert not verify(key, {**headers, "webhook-signature": signature}, body)  # too old
    now = int(time.time())
    fresh = {"webhook-id": "x", "webhook-timestamp": str(now), "webhook-signature": sign(key, "x", now, body)}
    assert verify(key, fresh, body) and not verify(key, fresh, body + b" ")


def test_retry_after_reads_seconds_and_dates_and_is_capped() -> None:
    assert retry_after("3", 60) == 3.0
    assert retry_after("3600", 60) == 60.0
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 10))
    assert 8 <= (retry_after(date, 60) or 0) <= 10.5
    assert retry_after("soon", 60) is None and retry_after(None, 60) is None


@pytest.mark.parametrize("mode", ["single", "batch"])
def test_every_result_arrives_signed_in_order_and_matches_the_schema(station_file, mode: str) -> None:
    with WebhookReceiver(KEY) as receiver:
        config = station_file(sink_table(receiver.url, mode=mode, batch_size=7))
        summary = run(config, 40)
        assert summary.cameras["top"].recorded == 40
        delivered = receiver.delivered()
    assert receiver.bad_signatures == 0
    assert [m["seq"] for m in delivered] == list(range(1, 41))
    schema = json.loads(schema_path().read_text())
    for message in delivered:
        jsonschema.validate(message, schema)
    first = delivered[0]
    assert first["station"] == "press-3" and first["camera"] == "top" and first["part_id"] == "p00000"
    assert first["model"]["hash"] == "f" * 64 and first["model"]["threshold_version"] == 3
    ids = [r["id"] for r in receiver.requests]
    if mode == "single":
        assert ids == [m["id"] for m in delivered]
    else:
        # A batch takes what the outbox holds when it is sent (at most 7), so how many POSTs
        # depends on the machine's pace: the batches must tile 1..40 in order, none over 7.
        spans = [tuple(int(n) for n in i.split("-")[1:3]) for i in ids]
        assert all(i.startswith("batch-") for i in ids) and spans[0][0] == 1 and spans[-1][1] == 40
        assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(spans))
        assert all(1 <= last - first + 1 <= 7 for first, last in spans) and len(ids) >= 6


def test_500_and_429_are_retried_with_retry_after_and_nothing_is_lost(station_file) -> None:
    answers = {2: (500, {}), 3: (429, {"Retry-After": "1"}), 4: (503, {})}
    with WebhookReceiver(KEY) as receiver:
        receiver.answer = lambda n, body: answers.get(n, (200, {}))
        config = station_file(sink_table(receiver.url))
        summary = run(config, 10)
        requests = list(receiver.requests)
    assert summary.cameras["top"].recorded == 10
    assert [m["seq"] for m in receiver.delivered()] == list(range(1, 11))
    failed_id = requests[2]["id"]
    assert [r["id"] for r in requests[2:6]] == [failed_id] * 4  # same idempotency key on every retry
    after_429 = requests[4]["at"] - requests[3]["at"]
    assert after_429 >= 0.95  # Retry-After: 1 honoured (the jittered backoff alone is <= 0.2 s)
    assert summary.status.sinks["mes"].failures == 3


def test_a_hanging_endpoint_times_out_and_the_line_keeps_inspecting(station_file) -> None:
    with WebhookReceiver(KEY) as receiver:
        receiver.delay_s = 2.0  # every request hangs past the 0.5 s timeout
        config = station_file(sink_table(receiver.url))
        statuses = []
        with Station(
            config, inspector_loader=fake_loader, sources={"top": ArraySource(60, rate=100)}
        ) as station:
            timer = threading.Timer(1.5, lambda: setattr(receiver, "delay_s", 0.0))
            timer.start()
            summary = station.run(drain_s=20, on_status=statuses.append)
            timer.join()
        assert summary.cameras["top"].recorded == 60
        assert max(s.cameras["top"].recorded for s in statuses if "top" in s.cameras) == 60
        errors = [s.sinks["mes"].last_error for s in statuses if s.sinks["mes"].last_error]
        assert any("no answer from http://127.0.0.1" in e and "within 0.5 s" in e for e in errors), errors
        assert max(s.sinks["mes"].backlog for s in statuses) > 10  # visible while the peer hung
        assert summary.status.sinks["mes"].backlog == 0
        seqs = [m["seq"] for m in receiver.delivered()]
    assert sorted(set(seqs)) == list(range(1, 61))  # all arrived, some twice (timed out, then got)
    assert seqs == sorted(seqs)


def test_410_disables_the_endpoint_and_replay_sends_the_dead_letters(station_file, tmp_path: Path) -> None:
    from flawscope.integrate.replay import replay

    with WebhookReceiver(KEY) as receiver:
        receiver.answer = lambda n, body: (410, {}) if 5 <= n < 6 else (200, {})
        config = station_file(sink_table(receiver.url))
        summary = run(config, 12)
        status = summary.status.sinks["mes"]
        assert status.state == "disabled" and "410 Gone" in status.last_error
        assert status.dead_letters == 7 and status.backlog == 0
        assert [m["seq"] for m in receiver.delivered()] == [1, 2, 3, 4, 5]
        result = replay(config, "mes", 1)
        assert result.sent == 7 and result.remaining_dead_letters == 0
        assert [m["seq"] for m in receiver.delivered()] == list(range(1, 13))


def test_a_record_the_endpoint_refuses_goes_to_the_dead_letters(station_file) -> None:
    with WebhookReceiver(KEY) as receiver:
        receiver.answer = lambda n, body: (422, {}) if body["data"]["seq"] == 3 else (200, {})
        config = station_file(sink_table(receiver.url))
        summary = run(config, 6)
        assert [m["seq"] for m in receiver.delivered()] == [1, 2, 4, 5, 6]
    status = summary.status.sinks["mes"]
    assert status.dead_letters == 1 and status.backlog == 0


def test_a_wrong_secret_is_refused_and_retried_until_fixed(station_file) -> None:
    with WebhookReceiver(b"another key of at least 24 bytes!") as receiver:
        config = station_file(sink_table(receiver.url))
        statuses = []
        with Station(config, inspector_loader=fake_loader, sources={"top": ArraySource(5)}) as station:
            summary = station.run(drain_s=1.0, on_status=statuses.append)
    status = summary.status.sinks["mes"]
    assert summary.cameras["top"].recorded == 5
    assert status.backlog == 5 and status.dead_letters == 0  # kept in the log, not dropped
    assert "answered 401 (signature or credentials refused)" in status.last_error

"""The line comes first: the web app runs below its caller's CPU priority and draws ahead only what
a reviewer opens next."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest
from tests.web.conftest import Served, Station, serve

from flawscope.errors import InputError
from flawscope.web import WebConfig
from flawscope.web.prerender import Prerenderer
from flawscope.web.priority import lower_priority

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priorities are Linux's")


def _nice_of(thread: threading.Thread) -> int:
    assert thread.native_id is not None
    return os.getpriority(os.PRIO_PROCESS, thread.native_id)


@linux
def test_a_thread_lowers_its_own_priority_and_its_new_threads_inherit_it() -> None:
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: dict[str, int] = {}

    def lowered() -> None:
        seen["own"] = lower_priority(3)
        child = threading.Thread(target=lambda: seen.update(child=lower_priority(0)))
        child.start()
        child.join()

    worker = threading.Thread(target=lowered)
    worker.start()
    worker.join()
    assert seen == {"own": min(19, before + 3), "child": min(19, before + 3)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # the caller's stays


@linux
def test_the_web_apps_threads_run_below_the_caller(station: Station) -> None:
    """The test process is the station here: pages served 3 levels below it (``nice = 3``), the
    live feed 5 levels below the pages, the pictures drawn ahead at 19; the caller's unchanged."""
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    earlier = {t.ident for t in threading.enumerate()}  # other apps' threads may still be there
    for served in serve(station, nice=3):
        with served.client("alice") as api:  # a request: the event loop's worker threads exist
            assert api.get("/api/v1/inspections", params={"limit": 1}).status_code == 200
        new = [t for t in threading.enumerate() if t.ident not in earlier]
        named = {t.name: t for t in new}
        workers = [t for t in new if t.name == "AnyIO worker thread"]
        assert workers and {_nice_of(t) for t in workers} == {min(19, mine + 3)}
        assert _nice_of(named["web-feed"]) == min(19, mine + 3 + 5)
        assert _nice_of(named["web-prerender"]) == 19
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine


def test_an_impossible_priority_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nice"):
        WebConfig(audit_url=f"sqlite:///{tmp_path / 'a.db'}", images=tmp_path, nice=25).checked()


def _wait(pre: Prerenderer) -> None:
    deadline = time.monotonic() + 10
    while not pre.idle():
        assert time.monotonic() < deadline, "the thread did not finish"
        time.sleep(0.01)


def test_only_the_head_of_the_queue_is_drawn_ahead_and_each_part_once() -> None:
    """A queue growing at line speed: the parts a reviewer opens next are drawn, not the rest."""
    queue = list(range(100, 160))  # 60 parts waiting, oldest first
    drawn: list[int] = []

    def draw(seq: int) -> int:
        drawn.append(seq)
        return 1

    pre = Prerenderer(draw, head=lambda: queue[:4])
    pre.start()
    try:
        pre.top_up()
        _wait(pre)
        assert drawn == [100, 101, 102, 103]
        queue.extend(range(160, 200))  # more parts queued behind: nothing new to draw
        pre.top_up()
        _wait(pre)
        assert drawn == [100, 101, 102, 103]
        del queue[:2]  # two reviewed: the next two come into the head
        pre.top_up()
        _wait(pre)
        assert drawn == [100, 101, 102, 103, 104, 105]
        pre.want([150])  # flagged, or the part after the one being reviewed
        _wait(pre)
        assert drawn[-1] == 150 and pre.drawn == 7
    finally:
        pre.stop()


def test_a_failing_queue_read_does_not_stop_the_drawing() -> None:
    drawn: list[int] = []

    def draw(seq: int) -> int:
        drawn.append(seq)
        return 1

    def head() -> list[int]:
        raise RuntimeError("database away")

    pre = Prerenderer(draw, head=head)
    pre.start()
    try:
        pre.top_up()
        pre.want([7])
        _wait(pre)
        assert drawn == [7]
    finally:
        pre.stop()


def test_the_dashboard_snapshot_is_encoded_once_for_every_page_and_stream(served: Served) -> None:
    import json

    feed = served.app.state.web.feed  # type: ignore[attr-defined]
    snap, text = feed.snapshot_json()
    again, same = feed.snapshot_json()
    if again is snap:  # no part arrived in between: the very same text, not encoded again
        assert same is text
    with served.client("alice") as api, api.stream("GET", "/events/stream") as events:
        assert events.status_code == 200
        lines: list[str] = []
        for line in events.iter_lines():
            lines.append(line)
            if line.startswith("data: "):
                break
    update = json.loads(lines[-1].removeprefix("data: "))
    assert f"id: {update['head']}" in lines and "event: update" in lines
    assert update["head"] == feed.head and "trend" in update and "new_parts" not in update

"""The web app in headless Chromium (Debian's, driven by Playwright): log in, watch the dashboard
follow the line, clear a review queue with the keyboard alone, draw a defect, and take screenshots.

Skipped when Chromium or Playwright is missing (``apt-get install chromium``; ``pip install
playwright``: its bundled browsers are never downloaded, Debian's Chromium is used).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.web.conftest import PASSWORD, Served, Station, add_users, make_station, serve

from flawscope.audit import AuditLog
from flawscope.web import queue as review_queue
from flawscope.web.database import WebDB

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]  # fmt: skip
# Screenshots land here when FLAWSCOPE_SCREENSHOTS names a folder (to look at them), else in tmp.
SHOTS = os.environ.get("FLAWSCOPE_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not Path(CHROMIUM).is_file():
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium)")
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(SHOTS) if SHOTS else tmp_path / "shots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait_until(page, script: str, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """Poll a JS expression until it is true (page.wait_for_function would need eval, which the
    app's Content-Security-Policy forbids)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(f"() => Boolean({script})"):
        if time.monotonic() > deadline:
            raise AssertionError(f"{script} still false after {timeout_s} s")
        time.sleep(0.1)


def judge(page, *keys: str) -> None:  # type: ignore[no-untyped-def]
    """Press the keys of a verdict and wait until the next part (or the empty queue) is shown."""
    swaps = page.evaluate("() => window.flawscopeSwaps")
    for key in keys:
        page.keyboard.press(key)
    wait_until(page, f"window.flawscopeSwaps > {swaps}")


def new_page(browser, served: Served, user: str = "alice", size=(1600, 1000)):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": size[0], "height": size[1]})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(served.url + "/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(served.url + "/")
    return page, errors


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Served]:
    station = make_station(tmp_path / "st", n=35)
    add_users(station.url)
    yield from serve(station, categories=("scratch", "dent", "stain"))


def test_the_dashboard_follows_the_line_without_reloading(browser, live: Served, shots: Path) -> None:  # type: ignore[no-untyped-def]
    page, errors = new_page(browser, live)
    page.wait_for_selector("#live.on", timeout=15000)
    assert page.inner_text("#last-seq") == "35"
    updates = page.evaluate("window.flawscopeUpdates")
    line = threading.Thread(
        target=live.station.add_parts, args=(60,), kwargs={"seed": 4, "start": 100, "every_s": 0.04}
    )
    line.start()
    wait_until(page, "Number(document.getElementById('last-seq').textContent) >= 60", 60)
    page.screenshot(path=str(shots / "dashboard-streaming.png"))
    line.join(60)
    wait_until(page, "Number(document.getElementById('last-seq').textContent) == 95")
    assert page.evaluate("window.flawscopeUpdates") > updates + 2  # several pushes, no reload
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    assert page.locator("#last-parts .card").count() == 8
    dots = (
        "Array.from(document.querySelectorAll('#trend path.dots'))"
        ".reduce((n, p) => n + p.getAttribute('d').split('M').length - 1, 0)"
    )
    # The charts and the strip follow at most every 2 s and 5 s: the last update is drawn after.
    wait_until(page, f"{dots} == 95", 10)
    strip = "Array.from(document.querySelectorAll('#last-parts .card')).map((c) => c.dataset.seq).join()"
    wait_until(page, f"{strip} == '95,94,93,92,91,90,89,88'", 10)
    assert page.inner_text("#t-n") == "95 parts this shift"
    page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
    assert not errors, errors


def test_a_reviewer_clears_the_queue_by_keyboard_alone(browser, tmp_path: Path, shots: Path) -> None:  # type: ignore[no-untyped-def]
    """100 review-band parts; G, D (with 1-9 for the type) and U only; the time is written down."""
    station = Station(f"sqlite:///{tmp_path / 'audit.db'}", tmp_path / "images", tmp_path)
    station.add_parts(100, seed=2, start=0, strengths=(85,))
    add_users(station.url)
    # Nearly all land in the review band; the few that do not are flagged, so 100 wait.
    db = WebDB(station.url)
    try:
        with AuditLog.open(station.url, read_only=True) as log:
            for record in log.records():
                if record.outcome.value != "review":
                    review_queue.flag(db, record.seq or 0, "erin", "check this one too")
    finally:
        db.close()
    for served in serve(station, categories=("scratch", "dent", "stain")):
        page, errors = new_page(browser, served)
        page.goto(served.url + "/review")
        page.screenshot(path=str(shots / "review.png"))
        plan = {}
        started = time.perf_counter()
        for n in range(100):
            if not page.locator("h1.pid").count():
                raise AssertionError(f"after {n} reviews the page shows: {page.inner_text('main')[:500]}")
            part = page.inner_text("h1.pid")
            keys = ["2", "d"] if n % 5 == 1 else ["u"] if n % 10 == 3 else ["g"]
            plan[part] = {"d": "defect", "u": "unsure", "g": "good"}[keys[-1]]
            judge(page, *keys)
        elapsed = time.perf_counter() - started
        assert page.inner_text("h1") == "Nothing to review"
        page.screenshot(path=str(shots / "review-empty.png"))
        assert not errors, errors
    with AuditLog.open(station.url, read_only=True) as log:
        reviews = [r for r in log.records() if r.kind == "review"]
        assert log.verify().ok
    assert len(reviews) == 100 and {r.operator for r in reviews} == {"alice"}
    verdict = {"pass": "good", "fail": "defect", "review": "unsure"}
    assert {r.part_id: verdict[r.outcome.value] for r in reviews} == plan
    assert {r.category for r in reviews if r.outcome.value == "fail"} == {"dent"}
    (shots / "keyboard-review.json").write_text(json.dumps({"parts": 100, "seconds": elapsed}))
    print(f"100 parts reviewed by keyboard in {elapsed:.1f} s")


def test_a_defect_is_drawn_and_kept_as_a_mask(browser, live: Served, shots: Path) -> None:  # type: ignore[no-untyped-def]
    page, errors = new_page(browser, live)
    page.goto(live.url + "/review")
    part = page.inner_text("h1.pid")
    # The drawing layer has no pixels of its own until the reviewer draws (a canvas's default size).
    size = "() => { const c = document.getElementById('draw'); return [c.width, c.height]; }"
    assert page.evaluate(size) == [300, 150]
    page.keyboard.press("m")
    box = page.locator("#draw").bounding_box()
    assert box is not None
    assert page.evaluate(size) == [round(box["width"]), round(box["height"])]  # as shown (1 px a pixel)
    page.mouse.move(box["x"] + 0.2 * box["width"], box["y"] + 0.2 * box["height"])
    page.mouse.down()
    for fx, fy in ((0.6, 0.25), (0.55, 0.7), (0.25, 0.65)):
        page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"], steps=6)
    page.mouse.up()
    assert "1 region" in page.inner_text("#drawn-count")
    page.screenshot(path=str(shots / "review-drawn.png"))
    judge(page, "3", "d")
    with AuditLog.open(live.station.url, read_only=True) as log:
        review = [r for r in log.records() if r.kind == "review"][-1]
    assert review.part_id == part and review.category == "stain" and len(review.regions) == 1
    x0, y0, x1, y1 = review.regions[0].bbox
    assert 15 < x0 < 35 and 10 < y0 < 30 and 65 < x1 < 85 and 60 < y1 < 75  # of a 128 x 96 image
    mask = json.loads(review.reason)["mask"]
    assert (live.station.images / mask).is_file()
    page.goto(live.url + f"/parts/{review.ref_seq}")
    history = page.inner_text(".history")
    assert "DEFECT reviewed as stain by alice" in history, history
    page.screenshot(path=str(shots / "part.png"))
    assert not errors, errors


def test_touch_screen_sizes_keep_targets_large(browser, live: Served, shots: Path) -> None:  # type: ignore[no-untyped-def]
    page, _ = new_page(browser, live, size=(1024, 768))
    page.goto(live.url + "/review")
    for selector in (".v-good", ".v-defect", ".v-unsure", ".cat"):
        box = page.locator(selector).first.bounding_box()
        assert box is not None and box["height"] >= 44 and box["width"] >= 44, selector
    page.screenshot(path=str(shots / "review-tablet.png"), full_page=True)
    page.goto(live.url + "/")
    page.screenshot(path=str(shots / "dashboard-tablet.png"), full_page=True)


def test_pages_are_swapped_in_place_and_back_forward_work(browser, live: Served, shots: Path) -> None:  # type: ignore[no-untyped-def]
    """Links and the browser's back and forward buttons swap pages in place: one document all along
    (a mark set in it survives), the dashboard's stream is closed when it is left and opened again
    on return (and then follows the line), and a swapped-in review page's keys work."""
    page, errors = new_page(browser, live)
    page.wait_for_selector("#live.on", timeout=15000)
    page.evaluate("window.flawscopeMark = 'same document'")
    page.evaluate("window.firstStream = window.flawscopeStream")
    assert page.evaluate("window.flawscopeStreams") == 1

    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    page.click("nav a[href='/inspections']")
    page.wait_for_url(live.url + "/inspections")
    page.wait_for_selector("table.data a")
    time.sleep(0.3)
    # One change of address per swap, after it (what benchmarks/web.py times a page action by).
    assert navigations == [live.url + "/inspections"], navigations
    assert page.evaluate("window.firstStream.readyState") == 2  # EventSource.CLOSED
    assert page.inner_text("nav a.active") == "Parts"
    page.locator("table.data a").first.click()
    page.wait_for_url(f"{live.url}/parts/*")
    part_url = page.url
    page.wait_for_selector("#part-img")
    assert page.evaluate("document.getElementById('stage').style.width") != ""  # fitted after the swap

    page.go_back()
    page.wait_for_url(live.url + "/inspections")
    page.wait_for_selector("table.data a")
    page.go_back()
    page.wait_for_url(live.url + "/")
    page.wait_for_selector("#live.on", timeout=15000)
    assert page.evaluate("window.flawscopeStreams") == 2  # opened again on return
    line = threading.Thread(target=live.station.add_parts, args=(12,), kwargs={"seed": 5, "start": 300})
    line.start()
    line.join(60)
    wait_until(page, "Number(document.getElementById('last-seq').textContent) == 47")
    page.go_forward()
    page.wait_for_url(live.url + "/inspections")
    page.go_forward()
    page.wait_for_url(part_url)
    page.wait_for_selector("#part-img")

    # The review page, reached by a link: its keys work, and a verdict swaps in the next part.
    page.click("nav a[href='/review']")
    page.wait_for_url(live.url + "/review")
    part = page.inner_text("h1.pid")
    page.keyboard.press("h")
    assert page.get_attribute("#btn-heat", "aria-pressed") == "false"
    judge(page, "g")
    assert page.inner_text("h1.pid") != part
    page.keyboard.press("r")  # the next part's page, swapped in by the verdict, has its keys too
    assert page.get_attribute("#btn-regions", "aria-pressed") == "false"
    page.keyboard.press("s")
    shown = "document.querySelector('h1.pid')"
    wait_until(page, f"{shown} && {shown}.textContent != {json.dumps(part)}")
    page.screenshot(path=str(shots / "review-swapped.png"))
    page.click("nav a[href='/']")
    page.wait_for_url(live.url + "/")
    page.wait_for_selector("#live.on", timeout=15000)
    assert page.evaluate("window.flawscopeStreams") == 3
    page.keyboard.press("g")  # the review keys are gone with the review page
    time.sleep(0.3)
    assert page.url == live.url + "/"

    assert page.evaluate("window.flawscopeMark") == "same document"
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    page.screenshot(path=str(shots / "dashboard-swapped.png"), full_page=True)
    assert not errors, errors
    with AuditLog.open(live.station.url, read_only=True) as log:
        reviews = [r for r in log.records() if r.kind == "review"]
    assert [r.part_id for r in reviews] == [part] and reviews[0].operator == "alice"


def test_a_lapsed_session_logs_in_again_in_place_and_forms_keep_their_tokens(browser, live: Served) -> None:  # type: ignore[no-untyped-def]
    """A link followed after the session is gone: the login page (with where to go next), then the
    page asked for; a form of a swapped-in page (its CSRF token from the new session) is accepted."""
    page, errors = new_page(browser, live)
    # The dashboard's stream is open before the session goes (else its first request could go out
    # without the cookie: that case is the next test's).
    page.wait_for_selector("#live.on", timeout=15000)
    page.evaluate("window.flawscopeMark = 1")
    page.context.clear_cookies()
    page.click("nav a[href='/inspections']")
    page.wait_for_url(f"{live.url}/login?next=/inspections")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(live.url + "/inspections")
    page.locator("table.data a").first.click()
    page.wait_for_url(f"{live.url}/parts/*")
    seq = int(page.url.rsplit("/", 1)[1])
    page.fill("input[name=note]", "seen from the swapped page")
    page.click("button.warn")
    page.wait_for_selector(".flash")
    assert "flag" in page.inner_text(".flash").lower() or "queue" in page.inner_text(".flash").lower()
    assert page.evaluate("window.flawscopeMark") == 1  # all in one document
    db = WebDB(live.station.url)
    try:
        item = review_queue.entry_of(db, seq)
    finally:
        db.close()
    assert item is not None and item.queued_by == "alice" and item.note == "seen from the swapped page"
    # Logging out (a form in the top bar) shows the login page; the dashboard then asks again.
    page.click("button.link")
    page.wait_for_url(f"{live.url}/login")
    page.click("a.brand")
    page.wait_for_url(f"{live.url}/login?next=/")
    assert page.evaluate("window.flawscopeMark") == 1
    assert not errors, errors


def test_a_dashboard_whose_stream_is_refused_opens_the_login_page_in_place(browser, live: Served) -> None:  # type: ignore[no-untyped-def]
    """The session lapses while the dashboard (re)connects its stream: the stream says so, and the
    login page comes in the same document, with no console error and no reconnecting forever."""
    page, errors = new_page(browser, live)
    page.wait_for_selector("#live.on", timeout=15000)
    page.evaluate("window.flawscopeMark = 1")
    page.context.clear_cookies()
    # The server ends every stream (as on shutdown); the browser reconnects, now without a session.
    live.app.state.web.feed.stop()  # type: ignore[attr-defined]
    page.wait_for_url(f"{live.url}/login?next=/", timeout=15000)
    page.wait_for_selector("input[name=username]")
    assert page.evaluate("window.flawscopeMark") == 1
    assert page.evaluate("window.flawscopeStream") is None
    assert not errors, errors

"""Reviews are new audit records linked to their inspection; the queue follows them."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from tests.web.conftest import Station, login, make_station

from flawscope.audit import AuditLog
from flawscope.errors import InputError
from flawscope.line.records import in_review_sample
from flawscope.types import Outcome
from flawscope.web import queue as review_queue
from flawscope.web.database import WebDB
from flawscope.web.errors import PartNotFoundError
from flawscope.web.live import Feed
from flawscope.web.reviews import ReviewConflictError, ReviewDesk, latest_reviews, reviews_of_part


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[tuple[Station, ReviewDesk, WebDB, AuditLog]]:
    station = make_station(tmp_path / "st", n=28)
    audit = AuditLog.open(station.url)
    db = WebDB(station.url)
    yield station, ReviewDesk(audit, db, station.images.resolve()), db, audit
    audit.close()
    db.close()


def inspections(audit: AuditLog, outcome: str) -> list[int]:
    return [r.seq for r in audit.records() if r.kind == "inspection" and r.outcome.value == outcome]  # type: ignore[misc]


def test_a_review_is_a_new_linked_record_and_the_chain_holds(desk) -> None:  # type: ignore[no-untyped-def]
    _, reviews, db, audit = desk
    target = inspections(audit, "review")[0]
    before = audit.get(target)
    review, created = reviews.submit(target, "defect", "alice", category="scratch", note="edge")
    assert created and review.ref_seq == target and review.reviewer == "alice" and review.verdict == "defect"
    stored = audit.get(review.seq)
    assert stored is not None and stored.kind == "review" and stored.ref_seq == target
    assert stored.outcome is Outcome.FAIL and stored.category == "scratch" and stored.operator == "alice"
    assert stored.image_sha256 == before.image_sha256 and stored.acquired_at > before.acquired_at  # type: ignore[union-attr]
    assert audit.get(target) == before  # the inspection is untouched
    assert audit.verify().ok
    assert [r.seq for r in reviews_of_part(db, target)] == [review.seq]


def test_a_double_submit_records_once(desk) -> None:  # type: ignore[no-untyped-def]
    _, reviews, db, audit = desk
    target = inspections(audit, "review")[0]
    first, created = reviews.submit(target, "good", "alice", request_id="form-000001", known_review_seq=0)
    again, created_again = reviews.submit(
        target, "good", "alice", request_id="form-000001", known_review_seq=0
    )
    assert created and not created_again and again == first
    assert len(reviews_of_part(db, target)) == 1


def test_a_stale_form_is_a_conflict_naming_who_reviewed(desk) -> None:  # type: ignore[no-untyped-def]
    _, reviews, db, audit = desk
    target = inspections(audit, "review")[0]
    reviews.submit(target, "good", "alice", request_id="form-aaaaaa", known_review_seq=0)
    with pytest.raises(ReviewConflictError, match="by alice"):
        reviews.submit(target, "defect", "bob", request_id="form-bbbbbb", known_review_seq=0)
    assert len(reviews_of_part(db, target)) == 1
    latest = reviews_of_part(db, target)[-1].seq
    _, created = reviews.submit(target, "defect", "bob", request_id="form-cccccc", known_review_seq=latest)
    assert created and [r.reviewer for r in reviews_of_part(db, target)] == ["alice", "bob"]


def test_reviewing_what_does_not_exist_changes_nothing(desk) -> None:  # type: ignore[no-untyped-def]
    _, reviews, _, audit = desk
    head = audit.head()
    with pytest.raises(PartNotFoundError, match="no inspection 9999"):
        reviews.submit(9999, "good", "alice")
    first_review, _ = reviews.submit(inspections(audit, "review")[0], "good", "alice")
    head = audit.head()
    with pytest.raises(PartNotFoundError):  # a review is not an inspection to review
        reviews.submit(first_review.seq, "good", "alice")
    for verdict, category in (("maybe", None), ("good", "scratch"), ("defect", "good"), ("defect", "../x")):
        with pytest.raises(InputError):
            reviews.submit(inspections(audit, "pass")[0], verdict, "alice", category=category)
    assert audit.head() == head


def test_a_drawn_mask_is_kept_with_its_hash_and_regions(desk) -> None:  # type: ignore[no-untyped-def]
    station, reviews, _, audit = desk
    target = inspections(audit, "fail")[0]
    mask = np.zeros((96, 128), np.uint8)
    mask[10:30, 40:70] = 255
    mask[60:70, 5:15] = 255
    review, _ = reviews.submit(target, "defect", "alice", category="dent", mask=mask)
    path = station.images.resolve() / review.mask
    import hashlib

    import cv2

    assert path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == review.mask_sha256
    assert np.array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), mask)
    stored = audit.get(review.seq)
    assert stored is not None and [r.bbox for r in stored.regions] == [(40, 10, 70, 30), (5, 60, 15, 70)]
    assert not list(path.parent.glob(".incoming-*"))


def test_the_queue_holds_the_review_band_flags_and_a_sample(desk) -> None:  # type: ignore[no-untyped-def]
    station, reviews, db, audit = desk
    rate = 0.3
    feed = Feed(db, shifts=(360,), sample_rate=rate)
    review_queue.catch_up(db, rate)
    band = inspections(audit, "review")
    sampled = [
        r.seq for r in audit.records() if r.outcome is Outcome.PASS and in_review_sample(r.image_sha256, rate)
    ]
    waiting = review_queue.pending(db, limit=500)
    assert {i.record.seq for i in waiting if i.reason == "review_band"} == set(band)
    # An entry's record is the inspection as logged (its own reason, not the queue's).
    logged = {r.seq: r for r in audit.records()}
    assert all(i.record.reason == logged[i.record.seq].reason for i in waiting)
    assert {i.record.seq for i in waiting if i.reason == "sample"} == set(sampled) and sampled
    # A failed part flagged by an operator comes first; flagging twice queues once.
    failed = inspections(audit, "fail")[0]
    item, created = review_queue.flag(db, failed, "alice", "looks fine to me")
    again, created_again = review_queue.flag(db, failed, "bob")
    assert created and not created_again and again.id == item.id
    assert review_queue.pending(db, limit=1)[0].record.seq == failed
    # A review takes a part off; catching up again queues nothing twice.
    reviews.submit(band[0], "good", "alice")
    assert band[0] not in {i.record.seq for i in review_queue.pending(db, limit=500)}
    assert review_queue.catch_up(db, rate) == 0
    # New parts from the line are queued by the feed as they are read.
    feed.start()
    try:
        counts_before = review_queue.counts(db)
        station.add_parts(14, seed=5, start=500)
        for _ in range(50):
            feed.poll_once()
            if review_queue.counts(db)["review_band"] > counts_before["review_band"]:
                break
        assert review_queue.counts(db)["review_band"] == counts_before["review_band"] + 2
    finally:
        feed.stop()


def test_a_review_recorded_but_not_closed_leaves_the_queue(desk) -> None:  # type: ignore[no-untyped-def]
    """The app killed between appending the review and closing the queue entry: nothing shows twice."""
    _, _, db, audit = desk
    review_queue.catch_up(db, 0.0)
    target = review_queue.pending(db, limit=1)[0].record.seq
    assert target is not None
    audit.append_review(target, "pass", "alice", '{"verdict": "good"}')  # no close_entries
    assert target not in {i.record.seq for i in review_queue.pending(db, limit=500)}
    with db.read() as conn:
        done = conn.execute(
            sa.text("select done_seq from review_queue where ref_seq=:s"), {"s": target}
        ).scalar()
    assert done is not None


def test_latest_reviews_take_the_last_word(desk) -> None:  # type: ignore[no-untyped-def]
    _, reviews, db, audit = desk
    a, b = inspections(audit, "review")[:2]
    reviews.submit(a, "good", "alice")
    reviews.submit(b, "unsure", "alice")
    last = reviews_of_part(db, b)[-1].seq
    reviews.submit(b, "defect", "bob", category="dent", known_review_seq=last)
    found = {r.ref_seq: (r.verdict, r.reviewer) for r in latest_reviews(db)}
    assert found == {a: ("good", "alice"), b: ("defect", "bob")}


def test_skipping_goes_to_the_next_entry_in_the_reviewers_order(desk) -> None:  # type: ignore[no-untyped-def]
    _, _, db, audit = desk
    review_queue.catch_up(db, 0.0)
    review_queue.flag(db, inspections(audit, "fail")[0], "alice")
    order = [i.id for i in review_queue.pending(db, limit=100)]
    assert review_queue.pending(db, limit=100)[0].reason == "flagged" and len(order) >= 3
    for here, after in itertools.pairwise(order):
        assert review_queue.pending(db, limit=1, after_id=here)[0].id == after
    assert review_queue.pending(db, limit=1, after_id=order[-1]) == []


def test_the_review_page_shows_the_models_category_and_how_sure_it_was(served) -> None:

    with served.client() as browser:
        login(browser, "alice")
        page = browser.get("/review")
        assert page.status_code == 200
        found = re.search(r"Model's type <strong>scratch</strong> \((\d+)% sure\)", page.text)
        assert found is not None, "the recorded confidence is shown"
        assert 50 <= int(found.group(1)) <= 99
    with AuditLog.open(served.station.url) as log:
        stopped = [r for r in log.records() if r.kind == "inspection" and r.outcome is not Outcome.PASS]
        passed = [r for r in log.records() if r.kind == "inspection" and r.outcome is Outcome.PASS]
    assert stopped and all(0.5 <= r.category_confidence <= 0.99 for r in stopped)
    assert passed and all(r.category_confidence == 0.0 and r.category is None for r in passed)

"""Outcome monitoring: escape and false-reject rates from reviews in a real audit log, against promises."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from flawscope.audit import AuditLog
from flawscope.decide.calibration import clopper_pearson_interval
from flawscope.line.records import in_review_sample
from flawscope.monitor.outcomes import describe, outcome_report
from flawscope.types import InspectionRecord, Outcome

RATE = 0.25


def _sha(n: int) -> str:
    return hashlib.sha256(f"part-{n}".encode()).hexdigest()


def _inspection(n: int, outcome: Outcome) -> InspectionRecord:
    return InspectionRecord(
        part_id=f"p{n}",
        station="s1",
        acquired_at=1.0 + n,
        outcome=outcome,
        image_sha256=_sha(n),
        model_hash="m" * 64,
    )


def _line(
    audit: AuditLog, passes: int, rejects: int
) -> tuple[list[InspectionRecord], list[InspectionRecord]]:
    stored = audit.append_many(
        [_inspection(n, Outcome.PASS) for n in range(passes)]
        + [_inspection(passes + n, Outcome.FAIL) for n in range(rejects)]
    )
    return [r for r in stored if r.outcome is Outcome.PASS], [r for r in stored if r.outcome is Outcome.FAIL]


def test_rates_and_intervals_from_reviews(tmp_path: Path) -> None:
    with AuditLog.open(f"sqlite:///{tmp_path / 'a.db'}") as audit:
        passed, rejected = _line(audit, 2000, 100)
        sampled = [r for r in passed if in_review_sample(r.image_sha256, RATE)]
        assert 400 < len(sampled) < 600
        # Reviewers label the sample: 1 in 100 is defective; an operator also flags a non-sampled
        # pass as defective, which must not count (it was chosen because it looked wrong).
        for i, record in enumerate(sampled):
            audit.append_review(record.seq, Outcome.FAIL if i % 100 == 0 else Outcome.PASS, "ann")
        flagged = next(r for r in passed if not in_review_sample(r.image_sha256, RATE))
        audit.append_review(flagged.seq, Outcome.FAIL, "bob")
        # Every reject reviewed: 10 of 100 were good; one reviewed twice (the latest counts).
        for i, record in enumerate(rejected):
            audit.append_review(record.seq, Outcome.PASS if i < 10 else Outcome.FAIL, "ann")
        audit.append_review(rejected[50].seq, Outcome.REVIEW, "cat")  # unsure: not a label
        report = outcome_report(audit.records(), sample_rate=RATE, target_frr=0.01, max_escape_rate=0.02)
    escapes = -(-len(sampled) // 100)
    assert report.escape.reviewed == len(sampled) and report.escape.found == escapes
    assert report.escape.estimate == pytest.approx(escapes / len(sampled))
    assert (report.escape.low, report.escape.high) == pytest.approx(
        clopper_pearson_interval(escapes, len(sampled))
    )
    assert report.escape.level == "ok"
    assert report.passes == 2000 and report.rejects == 100 and report.rejects_reviewed == 100
    # FRR = 10 good rejects / (10 + 2000 (1 - e)) ~ 0.5%: within the 1% promise.
    frr = report.false_reject
    assert frr.found == 10 and frr.estimate == pytest.approx(10 / (10 + 2000 * (1 - report.escape.estimate)))
    assert frr.low < frr.estimate < frr.high and frr.confidence == pytest.approx(0.9)
    assert frr.level == "ok" and "escape_rate" in describe(report.escape)


def test_an_interval_above_the_promise_alarms(tmp_path: Path) -> None:
    with AuditLog.open(f"sqlite:///{tmp_path / 'a.db'}") as audit:
        _, rejected = _line(audit, 1000, 200)
        for record in rejected:  # half the rejects were good parts: FRR ~ 9% against a 1% promise
            audit.append_review(record.seq, Outcome.PASS if record.seq % 2 else Outcome.FAIL, "ann")
        report = outcome_report(audit.records(), sample_rate=RATE, target_frr=0.01)
    assert report.false_reject.level == "alarm" and report.false_reject.low > 0.01
    assert report.escape.level == "unknown" and "escapes assumed 0" in report.false_reject.note
    assert report.level == "alarm"


def test_a_high_estimate_with_a_wide_interval_only_warns_and_no_reviews_is_unknown(tmp_path: Path) -> None:
    with AuditLog.open(f"sqlite:///{tmp_path / 'a.db'}") as audit:
        passed, _ = _line(audit, 400, 0)
        sampled = [r for r in passed if in_review_sample(r.image_sha256, RATE)][:20]
        for i, record in enumerate(sampled):
            audit.append_review(record.seq, Outcome.FAIL if i == 0 else Outcome.PASS, "ann")
        report = outcome_report(audit.records(), sample_rate=RATE, target_frr=0.01, max_escape_rate=0.02)
        empty = outcome_report(iter(()), sample_rate=RATE, target_frr=0.01)
    assert report.escape.estimate == pytest.approx(0.05) and report.escape.level == "warning"
    assert report.false_reject.level == "unknown" and empty.level == "unknown"
    assert "no reviews yet" in describe(empty.escape)


def test_cli_reports_records_and_exits_1_on_alarm(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flawscope.cli.app import app

    url = f"sqlite:///{tmp_path / 'a.db'}"
    with AuditLog.open(url) as audit:
        _, rejected = _line(audit, 1000, 200)
        for record in rejected:
            audit.append_review(record.seq, Outcome.PASS if record.seq % 2 else Outcome.FAIL, "ann")
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        app,
        [
            "monitor",
            "outcomes",
            "--sample-rate",
            "0.25",
            "--audit",
            url,
            "--target-frr",
            "0.01",
            "--record",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 1, result.output
    assert "false reject rate" in result.output and "alarm" in result.output
    import json

    assert json.loads(out.read_text())["false_reject"]["level"] == "alarm"
    with AuditLog.open(url, read_only=True) as audit:
        alarms = [r for r in audit.records() if r.kind == "drift"]
        assert audit.verify().ok
    assert [(r.category, r.outcome) for r in alarms] == [("false_reject_rate", Outcome.FAIL)]
    bad = CliRunner().invoke(app, ["monitor", "outcomes", "--sample-rate", "2", "--audit", url])
    assert bad.exit_code != 0

"""The drift monitor: quiet while nothing changes, names what moved, clears, never stops the line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from flawscope.decide.thresholds import utc_now_iso
from flawscope.errors import InputError
from flawscope.monitor import DriftMonitor, MonitorConfig, MonitorReference, build_reference, reference_of
from flawscope.monitor.imagestats import STAT_NAMES
from flawscope.types import Outcome, Verdict

INDEX = {name: i for i, name in enumerate(STAT_NAMES)}
MEANS = {"brightness": -1.0, "contrast": -1.3, "sharpness": 0.0, "position_x": 0.5, "position_y": 0.5}
SDS = {"brightness": 0.3, "contrast": 0.2, "sharpness": 0.2, "position_x": 0.08, "position_y": 0.06}


def _reference(rng: np.random.Generator, n: int = 300, position: bool = True) -> MonitorReference:
    stats = {name: tuple(rng.normal(MEANS[name], SDS[name], n)) for name in MEANS}
    stats["colour_rg"] = stats["colour_bg"] = (0.0,) * n
    return MonitorReference(
        stats=stats,
        scores=tuple(rng.lognormal(3.0, 0.2, n)),
        position_sensitive=position,
        created_at=utc_now_iso(),
    )


def _part(rng: np.random.Generator, shift: dict[str, float] | None = None) -> tuple[np.ndarray, Verdict]:
    stats = np.zeros(len(STAT_NAMES))
    for name in MEANS:
        stats[INDEX[name]] = rng.normal(MEANS[name] + (shift or {}).get(name, 0.0) * SDS[name], SDS[name])
    score = float(rng.lognormal(3.0 + (shift or {}).get("score", 0.0) * 0.2, 0.2))
    outcome = Outcome.PASS if score < 40 else Outcome.FAIL
    return stats, Verdict(outcome, score, score / 40)


def test_quiet_on_a_stable_stream_and_alarms_on_the_statistic_that_moved() -> None:
    rng = np.random.default_rng(0)
    events: list = []
    monitor = DriftMonitor(_reference(rng), review_threshold=40.0, listeners=[events.append])
    assert set(monitor.statistics) == {*MEANS, "score"}
    assert set(monitor.skipped) == {"colour_rg", "colour_bg"}
    for _ in range(3000):
        monitor.observe_stats(*_part(rng))
    assert [e for e in events if e.level == "alarm"] == []
    for _ in range(400):
        monitor.observe_stats(*_part(rng, {"brightness": -1.0}))  # the lamp dims by one part-to-part SD
    alarms = [e for e in events if e.level == "alarm"]
    assert alarms and alarms[0].statistic == "brightness"
    assert alarms[0].direction == "down" and "lighting" in alarms[0].message
    assert alarms[0].shift_sd < -0.5
    summary = monitor.summary()
    assert summary.level == "alarm"
    assert {s.name: s.level for s in summary.stats}["brightness"] == "alarm"
    json.dumps(summary.to_dict())  # endpoint-ready
    # The lamp is fixed: the alarm clears after clear_after parts back in control.
    for _ in range(1500):
        monitor.observe_stats(*_part(rng))
    assert events[-1].level == "ok" or any(e.level == "ok" and e.statistic == "brightness" for e in events)
    assert {s.name: s.level for s in monitor.summary().stats}["brightness"] == "ok"


def test_score_of_passed_parts_and_window_tests() -> None:
    rng = np.random.default_rng(1)
    events: list = []
    config = MonitorConfig(window=200)
    monitor = DriftMonitor(_reference(rng), 40.0, config, listeners=[events.append])
    for _ in range(600):
        monitor.observe_stats(*_part(rng, {"score": 1.5}))
    moved = {e.statistic for e in events if e.level == "alarm"}
    assert moved == {"score"}
    score = next(s for s in monitor.summary().stats if s.name == "score")
    assert score.psi is not None and score.psi > 0.25 and score.ks_p is not None and score.ks_p < 1e-7


def test_position_is_charted_only_for_position_sensitive_models() -> None:
    rng = np.random.default_rng(2)
    monitor = DriftMonitor(_reference(rng, position=False), 40.0)
    assert "position_x" not in monitor.statistics and "position_x" in monitor.skipped


def test_errors_and_not_inspected_parts_are_skipped_and_listener_failures_contained() -> None:
    rng = np.random.default_rng(3)

    def broken(_event: object) -> None:
        raise RuntimeError("sink down")

    monitor = DriftMonitor(_reference(rng), 40.0, MonitorConfig(window=50), listeners=[broken])
    nan = float("nan")
    monitor.observe(None, Verdict(Outcome.ERROR, nan, nan))
    monitor.observe(np.zeros((32, 32), np.uint8), Verdict(Outcome.NOT_INSPECTED, nan, nan))
    assert monitor.summary().parts == 0
    for _ in range(300):
        monitor.observe_stats(*_part(rng, {"sharpness": -3.0}))  # events go to a failing listener
    assert monitor.summary().level == "alarm"
    monitor.acknowledge()
    assert monitor.summary().level == "ok"


def test_config_and_reference_errors_name_the_field() -> None:
    with pytest.raises(InputError, match="lam"):
        MonitorConfig(lam=0)
    with pytest.raises(InputError, match="window"):
        MonitorConfig(window=10)
    with pytest.raises(InputError, match="needs at least 30"):
        build_reference([np.zeros((32, 32), np.uint8)] * 5, [1.0] * 5, "padim")
    with pytest.raises(InputError, match="NaN"):
        build_reference([np.zeros((32, 32), np.uint8)] * 30, [float("nan")] * 30, "padim")


def test_calibration_stores_the_reference_and_export_carries_it(calibrated) -> None:
    from flawscope.bundle import read_bundle

    trained = reference_of(read_bundle(calibrated.trained).manifest)
    deployed = reference_of(read_bundle(calibrated.deployed).manifest)
    assert trained is not None and deployed is not None
    assert len(trained.scores) == 40 and trained == deployed
    assert trained.position_sensitive  # PaDiM compares every position with its own statistics
    assert set(trained.stats) == set(STAT_NAMES)
    assert all(v is not None and math.isfinite(v) for v in trained.stats["brightness"])


def test_line_feeds_the_monitor_and_a_dimmed_stream_alarms_on_brightness(calibrated, tmp_path) -> None:
    from flawscope.acquire import SimSource
    from flawscope.audit import AuditLog
    from flawscope.line import run_line
    from flawscope.runtime import Inspector

    inspector = Inspector.load(calibrated.deployed)
    reference = reference_of(inspector.bundle.manifest)
    assert reference is not None and inspector.thresholds is not None
    events: list = []
    monitor = DriftMonitor(reference, inspector.thresholds.review, listeners=[events.append])
    source = SimSource(calibrated.dataset, rate=0, defect_ratio=0.0, count=400, drift="dim:0.5:0:150")
    with AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}") as audit:
        summary = run_line(source, inspector, audit, station="s", monitor=monitor)
    assert summary.recorded == 400
    assert monitor.summary().parts == 400
    alarms = {e.statistic: e for e in events if e.level == "alarm"}
    assert "brightness" in alarms and alarms["brightness"].direction == "down"
    assert alarms["brightness"].part_id >= "sim-000150"  # not before the lamp dimmed
    # The score chart may alarm too: the simulator also draws the training images, which score
    # lower than the held-out calibration parts (a real difference the monitor is right to see).
    assert set(alarms) <= {"brightness", "score"}


def test_a_failing_monitor_never_stops_the_line(calibrated, tmp_path) -> None:
    from flawscope.acquire import SimSource
    from flawscope.audit import AuditLog
    from flawscope.line import run_line
    from flawscope.runtime import Inspector

    class Broken:
        def observe_many(self, images, verdicts, part_ids):
            raise RuntimeError("monitor bug")

    inspector = Inspector.load(calibrated.deployed)
    with AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}") as audit:
        summary = run_line(
            SimSource(calibrated.dataset, rate=0, count=20), inspector, audit, station="s", monitor=Broken()
        )
        assert summary.recorded == 20 and audit.count() == 20

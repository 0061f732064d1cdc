"""Gaps recorded as not inspected, web coordinates in the audit records and in the sinks' message."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tests.webscan.conftest import LEVEL, DeviationInspector, flat_strip

from flawscope.acquire.assembly import RowBlock
from flawscope.acquire.rows import RowSource
from flawscope.audit import AuditLog
from flawscope.integrate.payload import to_message
from flawscope.types import Outcome
from flawscope.webscan import WebScan

PLACE = {"enterprise": "acme", "site": "s", "area": "a", "line": "l", "station": "web"}


class ListSource(RowSource):
    """Row blocks given in advance, in the order given (a faulty camera's delivery)."""

    def __init__(self, blocks: list[RowBlock], **options) -> None:
        super().__init__("test://rows", **options)
        self._given = blocks

    def _blocks(self):
        yield from self._given


def _blocks(strip: np.ndarray, order: list[tuple[int, int]]) -> list[RowBlock]:
    return [RowBlock(first, strip[first : first + n], 1.7e9) for first, n in order]


def test_dropped_rows_are_recorded_not_inspected_and_never_passed(tmp_path) -> None:
    strip = flat_strip(600, 32, [(300, 4, 6, 6)])  # a defect inside the lost rows
    order = [(i, 20) for i in range(0, 280, 20)] + [(i, 20) for i in range(340, 600, 20)]
    source = ListSource(_blocks(strip, order), frame_rows=64, overlap_rows=16, mm_per_row=1.0, roll="R1")
    with AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}") as log:
        result = WebScan(source, DeviationInspector(), audit=log, station="line1/web").run()
        records = list(log.records())
    assert [(s.row0, s.row1) for s in result.stretches] == [(280, 340)]
    assert result.summary.not_inspected_m == pytest.approx(0.06) and result.summary.rows_missing == 60
    assert result.defects == ()  # the defect was in rows that never arrived: not seen, and not passed
    gap = [r for r in records if r.outcome is Outcome.NOT_INSPECTED]
    assert len(gap) == 1 and "rows 280-339 not received" in gap[0].reason
    assert gap[0].web_along_m == pytest.approx(0.31) and gap[0].web_length_mm == pytest.approx(60.0)
    # No record passes any row of the gap.
    for r in records:
        if r.outcome is Outcome.PASS:
            start = r.web_along_m - r.web_length_mm / 2000
            end = r.web_along_m + r.web_length_mm / 2000
            assert end <= 0.28 + 1e-9 or start >= 0.34 - 1e-9
    # The yield never counts the lost metre segment as clean.
    assert result.summary.clean_m < result.summary.length_m


def test_out_of_order_rows_are_counted(tmp_path) -> None:
    strip = flat_strip(300, 32, [])
    order = [(0, 50), (50, 50), (30, 40), (100, 100), (60, 10), (200, 100)]
    source = ListSource(_blocks(strip, order), frame_rows=64, overlap_rows=16)
    result = WebScan(source, DeviationInspector()).run()
    assert source.assembly.blocks_out_of_order == 2
    assert source.assembly.rows_late + source.assembly.rows_duplicate == 50
    assert result.summary.rows_late + result.summary.rows_duplicate == 50
    assert result.stretches == () and result.summary.inspected_m == pytest.approx(0.3)


def test_web_coordinates_in_the_audit_record_and_the_sink_message(tmp_path) -> None:
    strip = flat_strip(400, 40, [(150, 20, 10, 8)])
    order = [(i, 25) for i in range(0, 400, 25)]
    source = ListSource(
        _blocks(strip, order), frame_rows=64, overlap_rows=16, mm_per_row=0.5, mm_per_px=0.25, roll="COIL-9"
    )
    with AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}") as log:
        result = WebScan(source, DeviationInspector(), audit=log).run()
        records = list(log.records())
        assert log.verify().ok
    (defect,) = result.defects
    (stored,) = [r for r in records if r.kind == "web_defect"]
    assert stored.web_roll == "COIL-9" and stored.outcome is Outcome.FAIL
    assert stored.web_along_m == pytest.approx(defect.along_m)
    assert abs(stored.web_along_m - 155 * 0.5 / 1000) <= 0.003  # centre row 155, within 3 mm
    assert abs(stored.web_across_mm - 24 * 0.25) <= 1.0
    assert stored.web_length_mm == pytest.approx(5.0) and stored.web_width_mm == pytest.approx(2.0)
    frame_seqs = {r.seq for r in records if r.kind == "inspection"}
    assert stored.ref_seq in frame_seqs  # points at the first frame that saw it
    frames = [r for r in records if r.kind == "inspection"]
    assert all(r.web_roll == "COIL-9" and math.isfinite(r.web_along_m) for r in frames)
    assert all(r.web_width_mm == pytest.approx(10.0) for r in frames)

    message = to_message(stored, PLACE)
    assert message["kind"] == "web_defect"
    assert message["web"] == {
        "roll": "COIL-9",
        "along_m": pytest.approx(stored.web_along_m),
        "across_mm": pytest.approx(stored.web_across_mm),
        "length_mm": pytest.approx(5.0),
        "width_mm": pytest.approx(2.0),
    }
    assert to_message(frames[0], PLACE)["web"]["roll"] == "COIL-9"


def test_the_message_validates_against_the_published_schema(tmp_path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from flawscope.integrate.payload import schema_path

    strip = flat_strip(200, 40, [(100, 20, 5, 5)])
    source = ListSource(_blocks(strip, [(0, 200)]), frame_rows=64, overlap_rows=16, roll="R")
    with AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}") as log:
        WebScan(source, DeviationInspector(), audit=log).run()
        records = list(log.records())
    import json

    schema = json.loads(schema_path().read_text())
    for record in records:
        jsonschema.validate(to_message(record, PLACE), schema)
    assert LEVEL == 100

"""The web's edges: found per frame, a margin inside them, the rest recorded as not inspected."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from tests.webscan.conftest import LEVEL, THRESHOLD

from flawscope.acquire.webstrip import WebStripSource
from flawscope.audit import AuditLog
from flawscope.data.preprocess import Preprocessing
from flawscope.data.webs import WebGenerator, WebSpec
from flawscope.decide.thresholds import Thresholds
from flawscope.errors import InputError
from flawscope.types import Outcome, Prediction, Provenance
from flawscope.webscan import WebScan
from flawscope.webscan.edges import EdgeConfig, find_web_edges, inspected_band, restrict_to_band
from flawscope.webscan.report import result_to_dict, write_defect_map


def _web_rows(rows: int, width: int, seed: int = 3) -> np.ndarray:
    spec = WebSpec(length_m=rows / 1000.0, width_px=width, defect_mm=(3.0, 4.0), seed=seed)
    return np.concatenate([block for _, block in WebGenerator(spec).blocks()])


def _in_view(web: np.ndarray, left: int, right: int, background: float) -> np.ndarray:
    """The web as a camera wider than it sees it: ``left``/``right`` px of background beside it."""
    rng = np.random.default_rng(0)
    rows = web.shape[0]
    sides = [rng.normal(background, 3.0, (rows, n)) for n in (left, right)]
    view = np.concatenate([sides[0], web.astype(np.float64), sides[1]], axis=1)
    return np.clip(view, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("background", [15.0, 240.0])  # a dark backing roll, a back light
def test_the_web_is_found_between_its_edges_on_a_dark_or_bright_background(background) -> None:
    web = _web_rows(64, 200)
    frame = _in_view(web, 37, 19, background)
    assert find_web_edges(frame) == (37, 237)
    assert find_web_edges(web) == (0, 200)  # the web fills the view: no edge, all of it is web
    assert find_web_edges(frame, background=background) == (37, 237)
    # Background only: without its level a flat frame is taken for web; with it, no web is seen.
    assert find_web_edges(frame[:, :30], background=background) is None


def test_a_margin_trims_inside_the_edges_in_millimetres() -> None:
    frame = _in_view(_web_rows(64, 200), 37, 19, 15.0)
    assert inspected_band(frame, EdgeConfig(margin_mm=5.0, find=True), mm_per_px=0.5) == (47, 227)
    # Without finding them, the margin is inside the frame's own first and last columns.
    assert inspected_band(frame, EdgeConfig(margin_mm=5.0), mm_per_px=1.0) == (5, 251)
    assert inspected_band(frame, EdgeConfig(margin_mm=200.0), mm_per_px=1.0) is None
    with pytest.raises(InputError, match="margin_mm"):
        EdgeConfig(margin_mm=-1.0)


def test_outside_the_band_nothing_scores_or_makes_a_region() -> None:
    amap = np.zeros((8, 20), np.float32)
    amap[:, 18:] = 90.0  # a hot edge
    amap[3, 9] = 60.0  # a defect inside the band
    cut = restrict_to_band(Prediction(np.array([90.0], np.float32), (amap,)), [(2, 16)], 0)
    assert cut.scores[0] == pytest.approx(60.0)
    assert cut.maps[0].shape == amap.shape and float(cut.maps[0][:, 16:].max()) == 0.0
    assert cut.maps[0][3, 9] == 60.0


class EdgeHotInspector:
    """A stand-in runtime: its map is the distance from the web level, and hot at the frame's edges.

    Like a model trained on good web, it flags the last columns of every frame (edge shading, the
    backbone's padding); the scan's inspected band must keep those out of the defects.
    """

    model_hash = "e" * 64
    version = "eeeeeeeeeeee.t1"
    provenance = Provenance(model_hash="e" * 64, model_version="eeeeeeeeeeee.t1", threshold_version=1)
    thresholds = Thresholds(
        reject=THRESHOLD, review=THRESHOLD, version=1, created_at="2026-11-30T00:00:00Z", method="explicit"
    )
    preprocessing = Preprocessing(64, 64)

    def score_many(self, images: Sequence[np.ndarray]) -> Prediction:
        maps = []
        for image in images:
            amap = np.abs(image.astype(np.float32) - LEVEL)
            amap[:, -3:] = 80.0
            maps.append(amap)
        return Prediction(np.array([m.max() for m in maps], np.float32), tuple(maps))

    def inspect_many(self, images):  # pragma: no cover - the band path never calls it
        raise AssertionError("the scan with an inspected band decides from score_many")


def test_a_scan_with_a_margin_reports_defects_only_inside_and_records_the_edges(strip_file, tmp_path) -> None:
    strip = np.full((400, 48), LEVEL, np.uint8)
    strip[200:206, 20:26] = 230  # a defect in the middle of the web
    strip[100:104, 46:48] = 230  # and one in the 4 mm margin: not inspected, so not reported
    path = strip_file(strip)
    source = WebStripSource(str(path), frame_rows=64, overlap_rows=16, mm_per_px=1.0, roll="E1")
    with AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}") as log:
        result = WebScan(source, EdgeHotInspector(), audit=log, edges=EdgeConfig(margin_mm=4.0)).run()
        records = list(log.records())
    assert [(d.row0, d.col0) for d in result.defects] == [(200, 20)]
    s = result.summary
    assert s.inspected_width_mm == pytest.approx(40.0) and s.edge_not_inspected_mm == pytest.approx(8.0)
    frames = [r for r in records if r.kind != "web_defect"]
    assert frames and all(r.outcome is not Outcome.ERROR for r in frames)
    assert all("not inspected: 4.0 mm at the first edge, 4.0 mm at the last" in r.reason for r in frames)
    assert all(r.web_width_mm == pytest.approx(40.0) for r in frames)
    assert all(r.web_across_mm == pytest.approx(24.0) for r in frames)
    # Frames whose only hot pixels are in the margins pass; the one with the defect fails.
    assert {r.outcome for r in frames} == {Outcome.PASS, Outcome.FAIL}
    doc = result_to_dict(result)
    assert doc["inspected_bands"][0] == {"start_m": 0.0, "end_m": 0.064, "from_mm": 4.0, "to_mm": 44.0}
    assert write_defect_map(result, tmp_path / "map.png").stat().st_size > 0
    # Without the margin the same scan reports the edge, and the hot margin column everywhere.
    plain = WebScan(WebStripSource(str(path), frame_rows=64, overlap_rows=16), _Whole()).run()
    assert len(plain.defects) > 1 and plain.summary.edge_not_inspected_mm == 0.0


class _Whole(EdgeHotInspector):
    """The same stand-in judged on whole frames (the scan without an inspected band)."""

    def inspect_many(self, images):
        from flawscope.decide.verdict import decide_many

        prediction = self.score_many(images)
        import dataclasses

        verdicts = decide_many(prediction, self.thresholds, self.model_hash)
        return [dataclasses.replace(v, anomaly_map=m) for v, m in zip(verdicts, prediction.maps, strict=True)]


def test_a_frame_without_web_is_not_inspected_never_passed(strip_file) -> None:
    web = _web_rows(192, 64)
    view = _in_view(web, 40, 40, 15.0)
    view[64:128] = np.clip(np.random.default_rng(1).normal(15.0, 3.0, (64, 144)), 0, 255).astype(np.uint8)
    path = strip_file(view)
    source = WebStripSource(str(path), frame_rows=64, overlap_rows=0, roll="E2")
    result = WebScan(source, EdgeHotInspector(), edges=EdgeConfig(find=True, background=15.0)).run()
    assert [(s.row0, s.row1) for s in result.stretches] == [(64, 128)]
    assert "no web found" in result.stretches[0].reason
    assert result.summary.not_inspected_m == pytest.approx(0.064)
    assert result.summary.inspected_width_mm == pytest.approx(64.0)
    assert result.summary.edge_not_inspected_mm == pytest.approx(80.0)

"""decide_many: the one decision function, and every caller giving the same outcome for a part."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flawscope.decide.thresholds import Thresholds
from flawscope.decide.verdict import decide, decide_many, outcomes, tell_apart
from flawscope.types import Outcome, Prediction


def _versioned(thresholds: Thresholds, version: int = 2) -> Thresholds:
    return Thresholds.from_dict({**thresholds.to_dict(), "version": version})


def _map(peak: float, box: tuple[int, int, int, int], shape=(40, 50)) -> np.ndarray:
    amap = np.full(shape, 0.1, np.float32)
    x0, y0, x1, y1 = box
    amap[y0:y1, x0:x1] = peak
    return amap


def _parts() -> tuple[Prediction, np.ndarray]:
    """Twelve parts: passes, reviews, large fails and small fails (a minimum area makes them reviews)."""
    specs = [
        (0.3, (0, 0, 1, 1), 0), (0.5, (0, 0, 1, 1), 0), (0.85, (0, 0, 1, 1), 0), (1.2, (2, 2, 5, 5), 0),
        (0.6, (0, 0, 1, 1), 0), (1.5, (5, 5, 30, 25), 0),
        (2.0, (5, 5, 30, 25), 1), (1.1, (3, 3, 6, 6), 1), (0.9, (0, 0, 1, 1), 1), (0.2, (0, 0, 1, 1), 1),
        (3.0, (0, 0, 50, 40), 1), (1.4, (10, 10, 14, 13), 1),
    ]  # fmt: skip
    scores = np.array([s for s, _, _ in specs], np.float32)
    maps = tuple(_map(s, box) for s, box, _ in specs)
    return Prediction(scores, maps), np.array([y for _, _, y in specs])


def test_reasons_tell_score_and_threshold_apart():
    assert tell_apart(64.80351, 64.80349) == ("64.80351", "64.80349")
    assert tell_apart(1.0, 2.0) == ("1", "2")
    t = Thresholds.explicit(64.80351)
    v = decide(64.80349, None, t)
    assert v.outcome is Outcome.PASS
    assert v.reason == "score 64.80349 < reject threshold 64.80351"
    banded = Thresholds.explicit(2.0, 1.5)
    assert decide(1.0, None, banded).reason == "score 1 < review threshold 1.5"
    assert "reject threshold 2" in decide(1.7, None, banded).reason


def test_vectorised_equals_one_part_at_a_time():
    prediction, _ = _parts()
    t = _versioned(Thresholds.explicit(1.0, 0.8, min_area_px=40, max_regions=3))
    many = decide_many(prediction, t, "h")
    one = [decide(float(s), m, t, "h") for s, m in zip(prediction.scores, prediction.maps, strict=True)]
    assert many == one
    found = outcomes(many)
    assert list(found[:6]) == ["pass", "pass", "review", "review", "pass", "fail"]
    assert list(found[6:]) == ["fail", "review", "review", "pass", "fail", "review"]


def test_bad_values_in_a_batch_are_errors_and_the_others_are_judged():
    prediction, _ = _parts()
    scores = prediction.scores.copy()
    scores[2] = np.nan
    maps = list(prediction.maps)
    maps[5] = maps[5].copy()
    maps[5][0, 0] = np.inf
    found = outcomes(decide_many(Prediction(scores, tuple(maps)), Thresholds.explicit(1.0)))
    assert found[2] == "error" and found[5] == "error"
    assert found[6] == "fail" and found[0] == "pass"


def test_classifier_category_confidence_and_unknown_parts():
    classes = ("good", "crack", "spot")
    probs = np.array(
        [
            [0.95, 0.03, 0.02],  # confident good, anomaly low: pass
            [0.05, 0.90, 0.05],  # confident crack: fail
            [0.05, 0.50, 0.45],  # defect, category unsure: review
            [0.97, 0.02, 0.01],  # classifier says good, but unlike any good part: review
        ],
        np.float32,
    )
    prediction = Prediction(
        scores=1.0 - probs[:, 0],
        anomaly_scores=np.array([1.0, 9.0, 9.0, 20.0]),
        class_probs=probs,
        classes=classes,
    )
    t = Thresholds.explicit(0.5, min_confidence=0.7, anomaly_reject=10.0)
    v = decide_many(prediction, t)
    assert [x.outcome for x in v] == [Outcome.PASS, Outcome.FAIL, Outcome.REVIEW, Outcome.REVIEW]
    assert v[0].category == "good" and v[0].confidence == pytest.approx(0.95)
    assert v[1].category == "crack" and v[1].confidence == pytest.approx(0.9 / 0.95)
    assert "confidence" in v[2].reason and v[2].category == "crack"
    assert "unlike the good parts" in v[3].reason and v[3].anomaly_score == 20.0
    # Stopped, not passed: the reviewer sees the likeliest defect, not "good".
    assert v[3].category == "crack" and v[3].confidence == pytest.approx(0.02 / 0.03)


def test_segmenter_regions_carry_their_class():
    amap = np.zeros((30, 40), np.float32)
    amap[2:8, 2:10] = 0.9
    amap[20:25, 30:38] = 0.8
    classes = ("good", "crack", "spot")
    cmap = np.zeros((30, 40), np.int32)
    cmap[2:8, 2:10] = 1
    cmap[20:25, 30:38] = 2
    prediction = Prediction(np.array([0.95]), (amap,), "probability", class_maps=(cmap,), classes=classes)
    (v,) = decide_many(prediction, Thresholds.explicit(0.5))
    assert v.outcome is Outcome.FAIL
    assert {r.category for r in v.regions} == {"crack", "spot"}
    assert v.category == "crack"  # the largest region's class


def test_a_fail_whose_map_stays_below_the_region_level_still_shows_where():
    # The classifier fails the part; its defect map peaks at 0.4 (< the 0.5 region level).
    amap = np.zeros((30, 40), np.float32)
    amap[10:16, 20:28] = 0.4
    amap[11:13, 22:24] = 0.1  # a dip below half the peak: left out of the region
    prediction = Prediction(np.array([0.95, 0.2]), (amap, amap * 0), "probability")
    v = decide_many(prediction, Thresholds.explicit(0.5))
    assert [x.outcome for x in v] == [Outcome.FAIL, Outcome.PASS]
    (region,) = v[0].regions
    assert region.bbox == (20, 10, 28, 16) and region.area_px == 6 * 8 - 4
    assert "half its peak 0.4" in v[0].reason
    assert v[1].regions == ()


def test_every_caller_gives_the_same_outcome(tmp_path: Path):
    """Evaluation, the report and its gallery, calibration and the INT8 count agree with decide_many."""
    from flawscope.decide.calibration import calibrate
    from flawscope.evaluate.gallery import HeatScale, make_tiles
    from flawscope.evaluate.metrics import evaluate_scores
    from flawscope.evaluate.report import ReportData, build_content
    from flawscope.evaluate.report_point import decided
    from flawscope.evaluate.run import operating_point
    from flawscope.export.int8 import count_fails

    prediction, labels = _parts()
    t = _versioned(Thresholds.explicit(1.0, 0.8, min_area_px=40))
    expected = outcomes(decide_many(prediction, t))
    types = ["good" if y == 0 else "spot" for y in labels]

    point = operating_point(prediction, labels, t)
    assert point.frr == pytest.approx(np.mean(expected[labels == 0] == "fail"))
    assert point.recall == pytest.approx(np.mean(expected[labels == 1] == "fail"))
    assert point.review_rate == pytest.approx(np.mean(expected == "review"))

    summary = evaluate_scores(prediction.scores, labels, types)
    paths = [str(tmp_path / f"{i}.png") for i in range(len(labels))]
    data = ReportData(
        dataset="d", model={"name": "m"}, paths=paths, labels=labels, defect_types=types,
        scores=prediction.scores, summary=summary, maps=list(prediction.maps), thresholds=t,
    )  # fmt: skip
    content = build_content(data)
    for truth, value in (("good", 0), ("defect", 1)):
        for o in ("pass", "review", "fail"):
            assert content["operating_point"]["counts"][truth][o] == int(
                ((labels == value) & (expected == o)).sum()
            )
    _, _, verdicts = decided(data)
    tiles = make_tiles(
        range(len(labels)), paths=paths, scores=prediction.scores, labels=labels, defect_types=types,
        maps=list(prediction.maps), masks=None, loader=lambda p: np.zeros((40, 50), np.uint8),
        verdicts=verdicts, scale=HeatScale(0.0, 1.0),
    )  # fmt: skip
    assert [tile.outcome for tile in tiles] == list(expected)

    assert count_fails(prediction, t) == int((expected == "fail").sum())

    goods = np.linspace(0.1, 1.0, 40)
    result = calibrate(goods, target_frr=0.05, require_bound=False)
    again = outcomes(decide_many(Prediction(goods), result.thresholds))
    assert result.n_false_rejects == int((again == "fail").sum())


def _detections() -> Prediction:
    """Three parts of a box detector: two confident boxes, one faint box, and a good part."""
    classes = ("good", "crack", "spot")
    probs = np.array([[0.02, 0.9, 0.08], [0.1, 0.3, 0.6], [0.97, 0.02, 0.01]], np.float32)
    boxes = (
        (
            (10.2, 4.0, 30.7, 12.5, 0.8, "crack"),
            (40.0, 40.0, 44.0, 46.0, 0.6, "spot"),
            (1.0, 1.0, 3.0, 3.0, 0.05, "spot"),
        ),
        ((5.0, 5.0, 9.0, 9.0, 0.2, "spot"),),
        (),
    )
    return Prediction(1.0 - probs[:, 0], classes=classes, class_probs=probs, boxes=boxes)


def test_a_box_detector_s_regions_are_its_confident_boxes():
    v = decide_many(_detections(), Thresholds.explicit(0.5))
    assert [x.outcome for x in v] == [Outcome.FAIL, Outcome.FAIL, Outcome.PASS]
    first = v[0].regions
    assert [(r.bbox, r.category) for r in first] == [((10, 4, 31, 13), "crack"), ((40, 40, 44, 46), "spot")]
    assert first[0].area_px == 21 * 9 and first[0].peak == pytest.approx(0.8)
    assert first[0].centroid == pytest.approx((20.45, 8.25))
    assert v[1].regions == ()  # its only box (0.2) is below the default box level (0.3)
    assert v[2].regions == ()  # a passing part gets no regions, as for maps
    lower = decide_many(_detections(), Thresholds.explicit(0.5, region_level=0.1, mm_per_px=0.5))
    assert [r.category for r in lower[1].regions] == ["spot"]
    assert lower[0].regions[0].area_mm2 == pytest.approx(21 * 9 * 0.25)


def test_region_rules_measure_a_box_detector_s_boxes():
    prediction = _detections()
    # the area rule reads the boxes (no map is needed to measure a defect): the first part's
    # largest box has 189 px, the second part's box is below the level, so nothing to measure
    v = decide_many(prediction, Thresholds.explicit(0.5, min_area_px=100))
    assert v[0].outcome is Outcome.FAIL and "189 px" in v[0].reason
    assert v[1].outcome is Outcome.REVIEW and "no region" in v[1].reason
    v = decide_many(prediction, Thresholds.explicit(0.5, min_area_px=200))
    assert v[0].outcome is Outcome.REVIEW
    assert decide_many(prediction, Thresholds.explicit(0.5, max_regions=1))[0].outcome is Outcome.FAIL
    assert "2 regions" in decide_many(prediction, Thresholds.explicit(0.5, max_regions=1))[0].reason


def test_a_box_that_is_not_finite_is_an_error():
    prediction = _detections()
    bad = ((0.0, 0.0, float("nan"), 5.0, 0.9, "crack"),)
    from dataclasses import replace

    v = decide_many(replace(prediction, boxes=(bad, *prediction.boxes[1:])), Thresholds.explicit(0.5))
    assert v[0].outcome is Outcome.ERROR and "box" in v[0].reason
    assert v[1].outcome is Outcome.FAIL


def test_a_detector_s_learnt_box_level_is_the_default_and_the_thresholds_override_it():
    from dataclasses import replace

    learnt = replace(_detections(), box_level=0.7)
    v = decide_many(learnt, Thresholds.explicit(0.5))
    assert [r.category for r in v[0].regions] == ["crack"]  # the 0.6 spot is below the learnt 0.7
    both = decide_many(learnt, Thresholds.explicit(0.5, region_level=0.5))
    assert [r.category for r in both[0].regions] == ["crack", "spot"]  # the thresholds' level wins
    assert learnt.select([0]).box_level == 0.7

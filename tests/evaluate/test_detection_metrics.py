"""``flawscope evaluate`` of a model that gives boxes reports mAP@0.5 against the labelled boxes."""

from __future__ import annotations

import numpy as np

from flawscope.evaluate.run import _supervised_metrics
from flawscope.types import Prediction, Sample


def test_boxes_are_scored_against_the_labelled_boxes_by_path():
    samples = [Sample("a.png", 1, "dent"), Sample("b.png", 1, "crack")]
    truth = {"a.png": ((10.0, 10.0, 30.0, 30.0, "dent"),), "b.png": ((0.0, 0.0, 8.0, 40.0, "crack"),)}
    prediction = Prediction(
        np.ones(2, np.float32),
        class_probs=np.array([[0.0, 0.1, 0.9], [0.0, 0.8, 0.2]], np.float32),
        classes=("good", "crack", "dent"),
        boxes=(
            ((11.0, 10.0, 30.0, 31.0, 0.9, "dent"), (50.0, 50.0, 60.0, 60.0, 0.3, "dent")),
            ((20.0, 0.0, 28.0, 40.0, 0.7, "crack"),),  # beside the true crack: no overlap
        ),
    )
    found = _supervised_metrics(prediction, samples, [None, None], truth)["detection"]
    assert found["ap"] == {"crack": 0.0, "dent": 1.0} and found["map"] == 0.5
    assert "detection" not in _supervised_metrics(prediction, samples, [None, None], None)


def test_region_f1_judges_only_the_boxes_a_level_keeps():
    from flawscope.evaluate.supervised import region_f1

    truth = [
        ((10.0, 10.0, 30.0, 30.0, "dent"),),
        ((0.0, 0.0, 8.0, 40.0, "crack"), (50.0, 0.0, 60.0, 9.0, "dent")),
    ]
    found = [
        ((11.0, 10.0, 30.0, 31.0, 0.9, "dent"), (10.0, 10.0, 30.0, 30.0, 0.8, "dent")),  # a duplicate
        # the crack, and a box in the right place with the wrong class
        ((0.0, 1.0, 8.0, 40.0, 0.35, "crack"), (50.0, 0.0, 60.0, 9.0, 0.2, "crack")),
    ]
    everything = region_f1(found, truth)
    # 4 kept; the dent and the crack match, the duplicate has no free box, the wrong class none
    assert (everything["kept"], everything["hits"], everything["true_boxes"]) == (4, 2, 3)
    assert everything["precision"] == 0.5 and everything["recall"] == 2 / 3
    above = region_f1(found, truth, level=0.5)
    assert (above["kept"], above["hits"]) == (2, 1)  # the crack (0.35) is not a region at 0.5
    assert region_f1(found, truth, level=0.95) == {
        "kept": 0, "true_boxes": 3, "hits": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0
    }  # fmt: skip

"""The ``box_detector`` learns class-labelled boxes on generated scenes, and finishes them in image pixels."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from flawscope.errors import InputError
from flawscope.evaluate.supervised import detection_map
from flawscope.models import get_model_class
from flawscope.types import Targets


def _scenes(rng: np.random.Generator, n: int) -> tuple[list[np.ndarray], list[tuple]]:
    """Noisy grey images with one or two bright or dark rectangles (the classes), and their boxes."""
    images, boxes = [], []
    for _ in range(n):
        image = rng.normal(128, 12, (96, 96))
        found = []
        for _ in range(int(rng.integers(1, 3))):
            w, h = (int(v) for v in rng.integers(16, 44, 2))
            x0, y0 = int(rng.integers(0, 96 - w)), int(rng.integers(0, 96 - h))
            cls = ("bright", "dark")[int(rng.integers(2))]
            image[y0 : y0 + h, x0 : x0 + w] += 70 if cls == "bright" else -70
            found.append((float(x0), float(y0), float(x0 + w), float(y0 + h), cls))
        images.append(np.repeat(image.clip(0, 255).astype(np.uint8)[..., None], 3, axis=2))
        boxes.append(tuple(found))
    return images, boxes


PARAMS = {
    "image_size": 96, "engine": "auto", "epochs": 5, "views": 0, "validation": 0.25, "patience": 0,
    "width": 16, "box_width": 32, "box_epochs": 30, "box_patience": 0, "threads": 1,
}  # fmt: skip


@dataclass(frozen=True)
class FittedScenes:
    """A ``box_detector`` fitted on 40 generated scenes, and 12 scenes it did not train on."""

    model: Any
    train: list[np.ndarray]
    test: list[np.ndarray]
    test_boxes: list[tuple]


@functools.cache
def fitted_on_scenes() -> FittedScenes:
    """Fitted once per test process (the export and runtime tests deploy the same model)."""
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    train, train_boxes = _scenes(rng, 40)
    test, test_boxes = _scenes(rng, 12)
    model = get_model_class("box_detector")(**PARAMS)
    model.fit(train, Targets(tuple(b[0][4] for b in train_boxes), (), tuple(train_boxes)))
    return FittedScenes(model, train, test, test_boxes)


def test_it_finds_the_boxes_of_scenes_it_did_not_train_on():
    fitted = fitted_on_scenes()
    model, test, test_boxes = fitted.model, fitted.test, fitted.test_boxes
    prediction = model.predict(test)
    found = detection_map(prediction.boxes, test_boxes, model.classes_)
    # 30 training scenes, 30 epochs: 0.50 measured; boxes placed at random score about 0
    assert found["map"] >= 0.3, found
    assert model.training_["log"]["box_head"]["epochs_run"] == 30
    assert model.training_["augmentation"]["box_head"]["flips"] is True


def test_it_refuses_images_without_boxes():
    rng = np.random.default_rng(1)
    images, _ = _scenes(rng, 12)
    model = get_model_class("box_detector")(**{**PARAMS, "box_epochs": 1})
    with pytest.raises(InputError, match="boxes"):
        model.fit(images, Targets(tuple(("bright", "dark")[i % 2] for i in range(12))))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("box_epochs", 0),
        ("top_k", -1),
        ("box_lr", 0.0),
        ("box_nms", 0.0),
        ("box_nms", 1.5),
        ("box_smooth", 2),
        ("box_smooth", 0),
        ("box_vote", 0.0),
        ("box_vote", "0.5"),
        ("box_weighting", "area"),
        ("box_region", 0.0),
        ("box_side_weight", 0.0),
        ("box_side_weight", True),
    ],
)
def test_box_hyperparameters_name_the_field(field, value):
    with pytest.raises(InputError, match=field):
        get_model_class("box_detector")(**{field: value})


def test_a_bundle_saved_before_box_nms_keeps_every_peak():
    cls = get_model_class("box_detector")
    assert cls.saved_params({"box_epochs": 40})["box_nms"] == 1.0  # its graph had no NMS
    assert cls.saved_params({"box_nms": 0.6})["box_nms"] == 0.6
    assert cls.default_params()["box_nms"] < 1.0
    assert cls.saved_params({})["box_quality"] is False  # nor a quality output
    assert cls.default_params()["box_quality"] is True
    # nor neighbour smoothing, voting or other regression weights
    old = cls.saved_params({})
    assert (old["box_smooth"], old["box_vote"]) == (1, 1.0)
    assert (old["box_weighting"], old["box_region"], old["box_side_weight"]) == ("gaussian", 0.54, 1.0)
    assert cls.default_params()["box_weighting"] == "ttfnet"
    assert cls.saved_params({"box_weighting": "ttfnet"})["box_weighting"] == "ttfnet"


def test_iou_aware_boxes_are_learnt_and_survive_save_load(tmp_path):
    import torch

    from flawscope.models.io import load_model, save_model

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    train, train_boxes = _scenes(rng, 40)
    test, test_boxes = _scenes(rng, 12)
    model = get_model_class("box_detector")(**PARAMS)  # box_quality by default
    model.fit(train, Targets(tuple(b[0][4] for b in train_boxes), (), tuple(train_boxes)))
    assert "box.quality.weight" in model.state_tensors()
    prediction = model.predict(test)
    assert detection_map(prediction.boxes, test_boxes, model.classes_)["map"] >= 0.3
    save_model(model, tmp_path / "b")
    loaded, _ = load_model(tmp_path / "b")
    again = loaded.predict(test).boxes
    assert [len(b) for b in again] == [len(b) for b in prediction.boxes]
    np.testing.assert_allclose(
        [d[4] for b in again for d in b], [d[4] for b in prediction.boxes for d in b], atol=1e-6
    )


def test_the_region_level_is_chosen_on_validation_boxes():
    from flawscope.models.box_training import BOX_LEVELS, choose_box_level

    truth = [[(0.0, 0.0, 10.0, 10.0, "a")], [(20.0, 20.0, 30.0, 30.0, "a")], [(5.0, 5.0, 9.0, 9.0, "b")]]
    # true boxes found at 0.55-0.7, false alarms at 0.3-0.45: every level in (0.45, 0.55] keeps
    # only the hits (F1 1.0)
    found = [
        [(0.0, 0.0, 10.0, 10.0, 0.7, "a"), (40.0, 40.0, 50.0, 50.0, 0.45, "a")],
        [(20.0, 20.0, 30.0, 31.0, 0.55, "a"), (0.0, 0.0, 4.0, 4.0, 0.3, "b")],
        [(5.0, 5.0, 9.0, 9.0, 0.6, "b")],
    ]
    level, rows = choose_box_level(found, truth, default=0.3)
    assert level == 0.5 and [r["level"] for r in rows] == list(BOX_LEVELS)
    assert next(r for r in rows if r["level"] == 0.5)["f1"] == 1.0
    assert next(r for r in rows if r["level"] == 0.3)["f1"] < 1.0
    # equal F1s keep the level nearest the default; no match at all keeps the default (None)
    one = [[(0.0, 0.0, 10.0, 10.0, "a")]]
    assert choose_box_level([[(0.0, 0.0, 10.0, 10.0, 0.9, "a")]], one, 0.3)[0] == 0.3
    assert choose_box_level([[(50.0, 50.0, 60.0, 60.0, 0.9, "a")]], one, 0.3)[0] is None


def test_a_fitted_detector_learns_its_region_level_and_its_bundle_keeps_it(tmp_path):
    from flawscope.bundle import read_bundle
    from flawscope.decide.thresholds import Thresholds
    from flawscope.decide.verdict import DEFAULT_BOX_LEVEL, decide_many
    from flawscope.manifest import TrainingSection
    from flawscope.models.io import load_model, save_model

    fitted = fitted_on_scenes()
    model, test = fitted.model, fitted.test
    log = model.training_["log"]["box_head"]
    assert model.box_level_ == log["box_level"] and model.box_level_ is not None
    best = max(r["f1"] for r in log["region_levels"])
    assert next(r for r in log["region_levels"] if r["level"] == model.box_level_)["f1"] == best
    assert model.declaration().extra["box_level"] == model.box_level_
    prediction = model.predict(test)
    assert prediction.box_level == model.box_level_
    verdicts = decide_many(prediction, Thresholds.explicit(1e-9))  # every part fails: all get regions
    assert all(v.outcome.value == "fail" for v in verdicts)
    for verdict, boxes in zip(verdicts, prediction.boxes, strict=True):
        assert len(verdict.regions) == sum(b[4] >= model.box_level_ for b in boxes)
    # the training log, with every level's F1, goes to the manifest as train_supervised writes it
    save_model(model, tmp_path / "b", training=TrainingSection(task="detect", log=model.training_["log"]))
    loaded, _ = load_model(tmp_path / "b")
    assert loaded.box_level_ == model.box_level_ and loaded.predict(test[:2]).box_level == model.box_level_
    recorded = read_bundle(tmp_path / "b").manifest.training
    assert recorded is not None and recorded.log is not None
    assert recorded.log["box_head"]["box_level"] == model.box_level_
    assert [dict(r) for r in recorded.log["box_head"]["region_levels"]] == log["region_levels"]
    # a bundle from before the level was learnt declares none: its verdicts keep the default
    older = type(model).__new__(type(model))
    older.load_declaration(dataclasses.replace(model.declaration(), extra={}))
    assert older.box_level_ is None and DEFAULT_BOX_LEVEL == 0.3

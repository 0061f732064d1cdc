"""A ``box_detector`` whose stride-16 blocks learn with its box head (``finetune="last"``)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from tests.models.test_box_detector import PARAMS, _scenes

from flawscope.errors import InputError
from flawscope.evaluate.supervised import detection_map
from flawscope.features.backbones import load_backbone
from flawscope.models import get_model_class
from flawscope.types import Targets

TUNED = {**PARAMS, "finetune": "last", "finetune_epochs": 30, "finetune_lr": 1e-3}


def _changed(model) -> set[str]:
    """Names of the trunk tensors that differ from the ImageNet weights."""
    imagenet = load_backbone(model.config.backbone).state_dict()
    return {k for k, v in model._embedder().backbone.state_dict().items() if not torch.equal(v, imagenet[k])}


@functools.cache
def tuned_on_scenes():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    train, train_boxes = _scenes(rng, 40)
    test, test_boxes = _scenes(rng, 12)
    model = get_model_class("box_detector")(**TUNED)
    model.fit(train, Targets(tuple(b[0][4] for b in train_boxes), (), tuple(train_boxes)))
    return model, test, test_boxes


def test_the_stride16_blocks_learn_boxes_and_the_head_comes_with_them():
    model, test, test_boxes = tuned_on_scenes()
    changed = _changed(model)
    trunk = model._embedder().backbone
    assert changed and all(int(k.split(".")[1]) > trunk.tap8 for k in changed)  # only the stride-16 blocks
    log = model.training_["log"]["finetune"]
    assert log["objective"] == "boxes" and 1 <= log["best_epoch"] <= log["epochs_run"] == 30
    assert log["validation_map"][log["best_epoch"] - 1] == max(log["validation_map"])
    assert model.training_["log"]["box_head"]["trained_with"] == "finetune"
    found = detection_map(model.predict(test).boxes, test_boxes, model.classes_)
    # the head of the chosen epoch on scenes it did not train on; boxes placed at random score about 0
    assert found["map"] >= 0.3, found


def test_tuned_box_detector_survives_save_load_and_onnx(tmp_path):
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.io import load_model, save_model
    from flawscope.runtime import Inspector

    model, test, _ = tuned_on_scenes()
    save_model(model, tmp_path / "b")
    loaded, _ = load_model(tmp_path / "b")
    assert _changed(loaded) == _changed(model)
    expected = model.predict(test)
    assert [len(b) for b in loaded.predict(test).boxes] == [len(b) for b in expected.boxes]
    export_bundle(tmp_path / "b", tmp_path / "d")
    runtime = Inspector.load(tmp_path / "d").score_many(test)
    np.testing.assert_allclose(runtime.scores, expected.scores, atol=1e-3)


def test_a_box_detector_cannot_tune_its_whole_trunk():
    with pytest.raises(InputError, match="finetune"):
        get_model_class("box_detector")(finetune="full")

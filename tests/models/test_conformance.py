"""Every registered model passes the same conformance test, read from its declaration.

It fits tiny generated data (good parts, and for the models that learn from labels, two defect
classes with masks and boxes), then checks the declared outputs' shapes, that nothing is NaN, a
save/load round trip, and that the exported ONNX graph gives every declared output as torch does.
"""

from __future__ import annotations

import numpy as np
import pytest

from flawscope.declaration import GOOD, LabelKind, OutputKind, Task
from flawscope.errors import InputError
from flawscope.models import MODELS, get_model_class
from flawscope.models.io import load_model, save_model

# The reference path is torch eager; the ONNX Runtime engine is compared with it below.
SMALL = {"image_size": 64, "batch_size": 4, "engine": "torch"}
TRAINED = {"epochs": 30, "views": 0, "validation": 0.25, "patience": 0, "width": 16}


def _targets(model_cls, tiny_labelled):
    from flawscope.types import Targets

    if model_cls.task is Task.ANOMALY:
        return tiny_labelled["good"], None
    boxes = tiny_labelled["boxes"] if LabelKind.BOX in model_cls.labels else ()
    return tiny_labelled["images"], Targets(tiny_labelled["classes"], tiny_labelled["masks"], boxes)


@pytest.fixture(scope="module", params=sorted(MODELS))
def fitted(request, tiny_labelled):
    cls = get_model_class(request.param)
    params = SMALL if cls.task is Task.ANOMALY else {**SMALL, **TRAINED, "anomaly": "padim"}
    model = cls(**params)
    images, targets = _targets(cls, tiny_labelled)
    assert model.fit(images, targets) is model
    return model


def test_registry_lists_builtin_models():
    assert {"patchcore", "padim", "classifier", "segmenter", "detector", "box_detector", "mixed"} <= set(
        MODELS
    )


def test_every_task_has_a_model():
    assert {cls.task for cls in MODELS.values()} == set(Task)


def test_registry_refuses_duplicates():
    from flawscope.models.registry import register

    with pytest.raises(ValueError, match="already registered"):
        register("padim")(type("Again", (), {}))


def test_init_stores_hyperparameters_only():
    for cls in MODELS.values():
        model = cls(**SMALL)
        assert not model.is_fitted
        assert not [k for k in vars(model) if k.endswith("_")]


def test_unknown_hyperparameter_is_refused():
    with pytest.raises(InputError, match="unknown hyperparameters"):
        get_model_class("padim")(not_a_param=3)


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("padim", {"batch_size": 0}, "batch_size"),
        ("padim", {"image_size": 8}, "image_size"),
        ("padim", {"aggregate": 2}, "aggregate"),
        ("padim", {"n_features": -3}, "n_features"),
        ("patchcore", {"coreset_ratio": 2}, "coreset_ratio"),
        ("patchcore", {"max_bank": 0}, "max_bank"),
        ("patchcore", {"search_dims": 0}, "search_dims"),
        ("segmenter", {"epochs": 0}, "epochs"),
        ("classifier", {"anomaly": "svm"}, "anomaly"),
        ("mixed", {"synthetic": 1.5}, "synthetic"),
        ("classifier", {"score": "map"}, "score"),
        ("segmenter", {"score": "peak"}, "score"),
    ],
)
def test_out_of_range_hyperparameters_name_the_field(name, params, field):
    with pytest.raises(InputError, match=field):
        get_model_class(name)(**params)


def test_declaration_matches_the_class(fitted):
    declared = fitted.declaration()
    assert declared.task is type(fitted).task
    assert declared.labels == type(fitted).labels
    assert declared.decision in declared.output_names
    if declared.task is not Task.ANOMALY:
        assert declared.classes[0] == GOOD and len(declared.classes) >= 2


def test_declared_outputs_have_their_shapes_and_no_nans(fitted, tiny_labelled):
    odd = tiny_labelled["good"][0][:50, :61]  # a size unlike training's
    images = [*tiny_labelled["good"][:3], odd, *tiny_labelled["bad"][:3]]
    declared = fitted.declaration()
    canvas = fitted.preprocessing_
    raw = fitted.raw_outputs(np.stack([_canvas(im, canvas) for im in images]))
    for spec in declared.outputs:
        value = raw[spec.name]
        assert value.shape[0] == len(images)
        if spec.kind in (OutputKind.ANOMALY_MAP, OutputKind.DEFECT_MAP, OutputKind.CLASS_MAP):
            assert value.shape[1:] == (canvas.height // spec.stride, canvas.width // spec.stride)
        if spec.kind is OutputKind.CLASS_PROBS:
            assert value.shape[1] == len(declared.classes)
            np.testing.assert_allclose(value.sum(axis=1), 1.0, rtol=1e-5)
        if spec.kind in (OutputKind.IMAGE_SCORE, OutputKind.DEFECT_MAP):
            assert ((value >= 0) & (value <= 1)).all()
        if spec.kind is OutputKind.CLASS_MAP:
            assert value.min() >= 0 and value.max() < len(declared.classes)
        if spec.kind is OutputKind.BOXES:
            assert value.ndim == 3 and value.shape[2] == 6
            confidence, cls = value[..., 4], value[..., 5]
            assert ((confidence >= 0) & (confidence <= 1)).all()
            assert (np.diff(confidence, axis=1) <= 0).all()  # best first
            found = confidence > 0
            assert found.any() and (cls[found] >= 1).all() and (cls[found] < len(declared.classes)).all()
            assert (value[..., 2] >= value[..., 0]).all() and (value[..., 3] >= value[..., 1]).all()
        assert np.isfinite(value).all()
    prediction = fitted.predict(images)
    assert prediction.scores.shape == (len(images),) and np.isfinite(prediction.scores).all()
    if declared.first(OutputKind.BOXES) is not None:
        assert len(prediction.boxes) == len(images)
        for image, boxes in zip(images, prediction.boxes, strict=True):
            for x0, y0, x1, y1, confidence, cls in boxes:  # in the image's own pixels
                assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]
                assert 0 < confidence <= 1 and cls in declared.defect_classes
    for maps in (m for m in (prediction.maps, prediction.anomaly_maps, prediction.class_maps) if m):
        for image, amap in zip(images, maps, strict=True):
            assert amap.shape == image.shape[:2] and np.isfinite(amap).all()
    if declared.decision_kind is OutputKind.ANOMALY_MAP:
        for amap, score in zip(prediction.maps, prediction.scores, strict=True):
            # the image score is the peak of its (smoothed) anomaly map, or a mean of its highest values
            if fitted.preprocessing_.score_area == 0:
                assert amap.max() == pytest.approx(float(score), rel=0.05)
            else:
                assert float(score) <= 1.05 * amap.max()


def _canvas(image, pre):
    from flawscope.data.preprocess import to_canvas

    return to_canvas(image, pre)[0]


def test_defects_score_higher_than_good_parts(fitted, tiny_labelled):
    good = fitted.predict(tiny_labelled["good_test"]).scores
    bad = fitted.predict(tiny_labelled["bad"]).scores
    assert np.median(bad) > np.median(good)


def test_defect_region_is_hotter_than_the_rest(fitted, tiny_labelled):
    prediction = fitted.predict(tiny_labelled["bad"])
    if not prediction.maps:
        pytest.skip(f"{fitted.name} gives no map")
    hotter = [
        amap[mask].mean() > amap[~mask].mean()
        for amap, mask in zip(prediction.maps, tiny_labelled["bad_masks"], strict=True)
    ]
    assert sum(hotter) >= len(hotter) - 1


def test_save_load_round_trip(fitted, tiny_labelled, tmp_path):
    bundle = save_model(fitted, tmp_path / "bundle")
    loaded, same = load_model(tmp_path / "bundle")
    assert same.model_hash == bundle.model_hash
    assert loaded.declaration() == fitted.declaration()
    a, b = loaded.predict(tiny_labelled["bad"]), fitted.predict(tiny_labelled["bad"])
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6, atol=1e-7)
    if a.class_probs is not None:
        np.testing.assert_allclose(a.class_probs, b.class_probs, rtol=1e-6, atol=1e-7)
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*.pt"))


def test_onnx_equals_torch(fitted, tiny_labelled, tmp_path):
    from flawscope.export.onnx_export import export_bundle
    from flawscope.runtime import Inspector

    save_model(fitted, tmp_path / "bundle")
    export_bundle(tmp_path / "bundle", tmp_path / "deploy")
    inspector = Inspector.load(tmp_path / "deploy")
    assert inspector.declaration == fitted.declaration()
    images = [*tiny_labelled["good_test"], *tiny_labelled["bad"]]
    batch = np.stack([_canvas(im, fitted.preprocessing_) for im in images])
    got, expected = inspector._run(batch), fitted.raw_outputs(batch)
    for spec in fitted.declaration().outputs:
        if spec.kind is OutputKind.CLASS_MAP:
            # argmax may flip where two classes tie to float rounding: a few cells at most
            assert (got[spec.name] != expected[spec.name]).mean() < 0.01
        else:
            scale = max(float(np.abs(expected[spec.name]).max()), 1e-6)
            np.testing.assert_allclose(got[spec.name], expected[spec.name], rtol=1e-3, atol=1e-3 * scale)
    a, b = inspector.score_many(images), fitted.predict(images)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-3, atol=1e-4)
    assert len(a.boxes) == len(b.boxes)
    for got_boxes, want_boxes in zip(a.boxes, b.boxes, strict=True):
        # the same boxes, in the same order, with the same classes, within 1e-3
        assert [box[5] for box in got_boxes] == [box[5] for box in want_boxes]
        np.testing.assert_allclose(
            np.array([box[:5] for box in got_boxes]).reshape(-1, 5),
            np.array([box[:5] for box in want_boxes]).reshape(-1, 5),
            atol=1e-3,
        )


def test_onnxruntime_engine_matches_torch_eager(fitted, tiny_labelled):
    if type(fitted).task is not Task.ANOMALY:
        pytest.skip("a trained head is not refitted here: training is compared through the bundle and ONNX")
    params = {**fitted.hyperparameters(), "engine": "onnxruntime"}
    fast = type(fitted)(**params).fit(tiny_labelled["good"])
    images = [*tiny_labelled["good_test"], *tiny_labelled["bad"]]
    np.testing.assert_allclose(fast.predict(images).scores, fitted.predict(images).scores, rtol=1e-3)


def test_fit_head_learns_from_the_given_features(fitted, tiny_labelled):
    """Refitting on features shifted by a constant gives the same scores: the head followed them."""
    import copy

    import torch

    if type(fitted).task is not Task.ANOMALY:
        pytest.skip("fit_head re-learns only good-parts statistics (covered by the station's INT8 test)")
    images = [*tiny_labelled["good_test"], *tiny_labelled["bad"]]
    before = fitted.predict(images).scores
    embedder = fitted._embedder()

    def shifted(batch: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return embedder(torch.from_numpy(batch)) + 10.0

    head = copy.copy(fitted).fit_head(tiny_labelled["good"], shifted)
    np.testing.assert_allclose(head.predict(images).scores, before, rtol=1e-3)
    # A head that had not followed would see every shifted feature as far from normal.
    stale = copy.copy(fitted)
    stale.runner_ = shifted
    assert np.median(stale.predict(images).scores) > 1.5 * np.median(before)
    np.testing.assert_array_equal(fitted.predict(images).scores, before)  # the original is untouched


def test_fit_head_needs_a_fitted_model(tiny_labelled):
    model = get_model_class("padim")(**SMALL)
    with pytest.raises(RuntimeError, match="not fitted"):
        model.fit_head(tiny_labelled["good"], lambda batch: batch)


def test_models_that_learn_from_labels_refuse_to_fit_without_them(tiny_labelled):
    with pytest.raises(InputError, match="needs image labels"):
        get_model_class("classifier")(**SMALL).fit(tiny_labelled["good"])

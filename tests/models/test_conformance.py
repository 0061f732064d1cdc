"""Every registered anomaly model passes the same conformance test."""

from __future__ import annotations

import numpy as np
import pytest

from flawscope.errors import InputError
from flawscope.models import MODELS, get_model_class
from flawscope.models.io import load_model, save_model

# The reference path is torch eager; the ONNX Runtime engine is compared with it below.
SMALL = {"image_size": 64, "batch_size": 4, "engine": "torch"}


@pytest.fixture(scope="module", params=sorted(MODELS))
def fitted(request, tiny_parts):
    model = get_model_class(request.param)(**SMALL)
    assert model.fit(tiny_parts["train"]) is model
    return model


def test_registry_lists_builtin_models():
    assert {"patchcore", "padim"} <= set(MODELS)


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
    ],
)
def test_out_of_range_hyperparameters_name_the_field(name, params, field):
    with pytest.raises(InputError, match=field):
        get_model_class(name)(**params)


def test_maps_have_input_size_and_no_nans(fitted, tiny_parts):
    odd = tiny_parts["good"][0][:90, :111]  # a size unlike training's
    images = [*tiny_parts["good"], odd, *tiny_parts["bad"]]
    prediction = fitted.predict(images)
    assert prediction.scores.shape == (len(images),)
    assert np.isfinite(prediction.scores).all()
    for image, amap, score in zip(images, prediction.maps, prediction.scores, strict=True):
        assert amap.shape == image.shape[:2]
        assert np.isfinite(amap).all()
        # the image score is the peak of its (smoothed) anomaly map
        assert amap.max() == pytest.approx(float(score), rel=0.05)


def test_defects_score_higher_than_good_parts(fitted, tiny_parts):
    good = fitted.predict(tiny_parts["good"]).scores
    bad = fitted.predict(tiny_parts["bad"]).scores
    assert np.median(bad) > np.median(good)


def test_defect_region_is_hotter_than_the_rest(fitted, tiny_parts):
    prediction = fitted.predict(tiny_parts["bad"])
    hotter = [
        amap[mask].mean() > amap[~mask].mean()
        for amap, mask in zip(prediction.maps, tiny_parts["masks"], strict=True)
    ]
    assert sum(hotter) >= len(hotter) - 1


def test_save_load_round_trip(fitted, tiny_parts, tmp_path):
    bundle = save_model(fitted, tmp_path / "bundle")
    loaded, same = load_model(tmp_path / "bundle")
    assert same.model_hash == bundle.model_hash
    np.testing.assert_allclose(
        loaded.predict(tiny_parts["bad"]).scores, fitted.predict(tiny_parts["bad"]).scores, rtol=1e-6
    )
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*.pt"))


def test_onnx_equals_torch(fitted, tiny_parts, tmp_path):
    from flawscope.export.onnx_export import export_bundle
    from flawscope.runtime import Inspector

    save_model(fitted, tmp_path / "bundle")
    export_bundle(tmp_path / "bundle", tmp_path / "deploy")
    inspector = Inspector.load(tmp_path / "deploy")
    images = [*tiny_parts["good"], *tiny_parts["bad"]]
    expected = fitted.predict(images)
    got = inspector.score_many(images)
    np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-3)
    for a, b in zip(got.maps, expected.maps, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * float(expected.scores.max()))


def test_onnxruntime_engine_matches_torch_eager(fitted, tiny_parts):
    params = {**fitted.hyperparameters(), "engine": "onnxruntime"}
    fast = type(fitted)(**params).fit(tiny_parts["train"])
    images = [*tiny_parts["good"], *tiny_parts["bad"]]
    np.testing.assert_allclose(fast.predict(images).scores, fitted.predict(images).scores, rtol=1e-3)


def test_fit_head_learns_from_the_given_features(fitted, tiny_parts):
    """Refitting on features shifted by a constant gives the same scores: the head followed them."""
    import copy

    import torch

    images = [*tiny_parts["good"], *tiny_parts["bad"]]
    before = fitted.predict(images).scores
    embedder = fitted._embedder()

    def shifted(batch: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return embedder(torch.from_numpy(batch)) + 10.0

    head = copy.copy(fitted).fit_head(tiny_parts["train"], shifted)
    np.testing.assert_allclose(head.predict(images).scores, before, rtol=1e-3)
    # A head that had not followed would see every shifted feature as far from normal.
    stale = copy.copy(fitted)
    stale.runner_ = shifted
    assert np.median(stale.predict(images).scores) > 1.5 * np.median(before)
    np.testing.assert_array_equal(fitted.predict(images).scores, before)  # the original is untouched


def test_fit_head_needs_a_fitted_model(tiny_parts):
    model = get_model_class("padim")(**SMALL)
    with pytest.raises(RuntimeError, match="not fitted"):
        model.fit_head(tiny_parts["train"], lambda batch: batch)

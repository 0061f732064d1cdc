"""A segmenter whose thresholds judge its defect map (``score="map"``) instead of its image head."""

from __future__ import annotations

import numpy as np
import pytest

from flawscope.errors import InputError
from flawscope.models import get_model_class
from flawscope.types import Targets

QUICK = {"image_size": 64, "engine": "torch", "views": 0, "patience": 0, "threads": 1}
# One head: these tests are about the scores, not the segmenter's default ensemble.
FAST = {**QUICK, "epochs": 12, "width": 16, "ensemble": 1}


def deployed_inspector(path, int8=False, good=()):
    """The bundle at ``path / "b"`` with a threshold, exported (``int8``) to ``path / "d"``, run by ONNX."""
    from flawscope.bundle import read_bundle, update_manifest
    from flawscope.decide.thresholds import ThresholdHistory, Thresholds
    from flawscope.export.onnx_export import export_bundle
    from flawscope.runtime import Inspector

    update_manifest(read_bundle(path / "b"), thresholds=ThresholdHistory().add(Thresholds.explicit(5.0)))
    extra = {"calibration_images": good, "refit_images": good, "good_images": good} if int8 else {}
    export_bundle(path / "b", path / "d", int8=int8, **extra)
    return Inspector.load(path / "d", int8=int8, allow_unsigned=True)


def deployed(tmp_path, images):
    """The scores the ONNX runtime gives ``images`` with the bundle saved at ``tmp_path / "b"``."""
    return deployed_inspector(tmp_path).score_many(images)


def test_a_map_score_is_the_top_area_mean_of_the_defect_map(tiny_labelled):
    targets = Targets(tiny_labelled["classes"], tiny_labelled["masks"])
    model = get_model_class("segmenter")(**FAST, score="map", score_area=32)
    model.fit(tiny_labelled["images"], targets)
    assert model.declaration().decision == "defect_map"
    images = [*tiny_labelled["good_test"], *tiny_labelled["bad"]]
    prediction = model.predict(images)
    # The score is taken on the canvas and the maps are resized to each image: close, not equal.
    tops = [np.sort(m.ravel())[::-1][:32].mean() for m in prediction.maps]
    np.testing.assert_allclose(prediction.scores, tops, rtol=0.02)
    assert all(s <= m.max() + 1e-6 for s, m in zip(prediction.scores, prediction.maps, strict=True))


def test_auto_chooses_on_validation_and_the_choice_survives_a_round_trip(tiny_labelled, tmp_path):
    from flawscope.models.io import load_model, save_model

    targets = Targets(tiny_labelled["classes"], tiny_labelled["masks"])
    model = get_model_class("segmenter")(**FAST, score="auto", validation=0.3)
    model.fit(tiny_labelled["images"], targets)
    notes = " ".join(model.training_["notes"])
    assert "chosen on" in notes and model.score_ in ("class", "map")
    expected = "defect_map" if model.score_ == "map" else "defect_score"
    assert model.declaration().decision == expected
    save_model(model, tmp_path / "b")
    again, _ = load_model(tmp_path / "b")
    assert again.declaration().decision == expected
    assert again.preprocessing_.score_area == model.preprocessing_.score_area
    images = tiny_labelled["bad"]
    np.testing.assert_allclose(again.predict(images).scores, model.predict(images).scores, atol=1e-6)


def test_choose_score_keeps_the_best_ranking_candidate_and_the_head_on_ties():
    from flawscope.models.score_choice import choose_score

    y = np.array([0] * 40 + [1] * 10)
    rng = np.random.default_rng(0)
    noisy = rng.random(50)
    clean = y + 0.1 * rng.random(50)
    choice = choose_score({"class": noisy, "map@0": noisy, "map@256": clean}, y)
    assert (choice.score, choice.area) == ("map", 256) and choice.measured["map@256"] == 1.0
    tie = choose_score({"class": clean, "map@0": clean}, y)
    assert tie.score == "class"
    assert choose_score({"class": noisy}, np.zeros(50)).score == "class"


def test_a_fused_score_runs_in_the_graph_and_survives_export(tiny_labelled, tmp_path):
    from flawscope.models.io import save_model

    targets = Targets(tiny_labelled["classes"], tiny_labelled["masks"])
    model = get_model_class("segmenter")(**FAST, score="fused", anomaly="padim", validation=0.3)
    model.fit(tiny_labelled["images"], targets)
    assert model.score_ == "fused" and model.fusion_ is not None and model.fusion_.shape == (2, 3)
    # The maps' peaks are taken inside the image: the graph gives the standardised maps and
    # the finishing adds their peaks.
    assert model.declaration().output_names[-1] == "fusion_maps"
    assert model.declaration().extra == {"fusion_margin": 1}  # the default: "inner"
    images = [*tiny_labelled["good_test"], *tiny_labelled["bad"]]
    prediction = model.predict(images)
    assert np.isfinite(prediction.scores).all()
    assert prediction.scores.min() < 0 or prediction.scores.max() > 1  # standardised, not a probability
    assert np.median(prediction.scores[4:]) > np.median(prediction.scores[:4])
    save_model(model, tmp_path / "b")
    runtime = deployed(tmp_path, images)
    np.testing.assert_allclose(runtime.scores, prediction.scores, atol=1e-3)


def test_a_bundle_trained_with_its_own_augmentation_loads(tiny_labelled, tmp_path):
    from flawscope.models.io import load_model, save_model

    augment = {"HorizontalFlip": {"p": 0.5}, "RandomRotate90": {"p": 1.0}}
    model = get_model_class("classifier")(**{**FAST, "views": 1, "epochs": 2}, augment=augment)
    model.fit(tiny_labelled["images"], Targets(tiny_labelled["classes"]))
    save_model(model, tmp_path / "b")
    loaded, bundle = load_model(tmp_path / "b")  # the manifest gives the mapping back read-only
    assert dict(bundle.manifest.model.hyperparameters["augment"]) == augment
    assert loaded.augment_spec().to_dict() == model.augment_spec().to_dict()


def test_the_segmenters_good_weight_and_ensemble_defaults_and_older_bundles_keep_theirs():
    seg, clf = get_model_class("segmenter"), get_model_class("classifier")
    assert seg().params["good_weight"] == 32.0 and clf().params["good_weight"] == 1.0
    assert seg().params["ensemble"] == 3 and clf().params["ensemble"] == 1
    old = {
        k: v
        for k, v in seg().hyperparameters().items()
        if k not in ("good_weight", "ensemble", "fused_peaks", "fused_defect")
    }
    before = seg(**seg.saved_params(old)).params  # trained before either existed
    assert before["good_weight"] == 1.0 and before["ensemble"] == 1
    assert seg.saved_params({**old, "good_weight": 4.0})["good_weight"] == 4.0
    assert seg.saved_params({**old, "ensemble": 2})["ensemble"] == 2
    assert seg().params["fused_peaks"] == "inner" and before["fused_peaks"] == "canvas"
    assert seg().params["fused_defect"] == "log_odds" and before["fused_defect"] == "probability"
    import pytest

    from flawscope.errors import InputError

    with pytest.raises(InputError, match="good_weight"):
        seg(good_weight=0)
    with pytest.raises(InputError, match="fused_peaks"):
        seg(fused_peaks="border")
    with pytest.raises(InputError, match="fused_defect"):
        seg(fused_defect="logit")


def test_a_default_segmenter_trains_three_heads_and_a_classifier_one(tiny_labelled):
    from flawscope.models.ensemble import HeadEnsemble
    from flawscope.models.heads import DefectHead

    targets = Targets(tiny_labelled["classes"], tiny_labelled["masks"])
    quick = {**QUICK, "epochs": 3, "width": 8}
    seg = get_model_class("segmenter")(**quick).fit(tiny_labelled["images"], targets)
    labels = Targets(tiny_labelled["classes"])
    clf = get_model_class("classifier")(**quick).fit(tiny_labelled["images"], labels)
    assert isinstance(seg.head_module_, HeadEnsemble) and len(seg.head_module_.members) == 3
    assert len(seg.training_["log"]["members"]) == 3
    assert isinstance(clf.head_module_, DefectHead) and "members" not in clf.training_["log"]
    scores = seg.predict([*tiny_labelled["good_test"], *tiny_labelled["bad"]]).scores
    assert np.isfinite(scores).all()


def test_a_fused_score_over_the_whole_canvas_is_still_one_graph_output(tiny_labelled):
    # Bundles from before fused_peaks: the graph's defect_score is the whole fused score.
    targets = Targets(tiny_labelled["classes"], tiny_labelled["masks"])
    params = {**FAST, "score": "fused", "anomaly": "padim", "validation": 0.3}
    canvas = get_model_class("segmenter")(**params, fused_peaks="canvas").fit(
        tiny_labelled["images"], targets
    )
    assert "fusion_maps" not in canvas.declaration().output_names
    images = tiny_labelled["bad"]
    from flawscope.data.preprocess import to_batch

    batch, _ = to_batch(images, canvas.preprocessing_)
    np.testing.assert_allclose(
        canvas.predict(images).scores, canvas.raw_outputs(batch)["defect_score"], atol=1e-6
    )


def test_fused_peaks_inside_the_image_are_what_torch_a_loaded_bundle_and_the_runtime_give(
    tiny_labelled, tmp_path
):
    from flawscope.data.preprocess import canvas_valid_mask, geometry_of, inner_cells, to_batch
    from flawscope.models.io import load_model, save_model

    targets = Targets(tiny_labelled["classes"], tiny_labelled["masks"])
    params = {**FAST, "score": "fused", "anomaly": "padim", "validation": 0.3, "fused_peaks": "image"}
    model = get_model_class("segmenter")(**params).fit(tiny_labelled["images"], targets)
    assert model.declaration().extra == {}  # no margin: every cell inside the image
    # a tall image on the model's canvas: padded left and right, so the padding matters
    images = [np.ascontiguousarray(np.rot90(im)) for im in tiny_labelled["bad"]]
    batch, geometries = to_batch(images, model.preprocessing_)
    raw = model.raw_outputs(batch)
    cells = inner_cells(canvas_valid_mask(geometries, model.preprocessing_, 8), 0)
    peaks = (
        np.where(cells[:, None], raw["fusion_maps"], -np.inf)
        .reshape(len(images), 2, -1)
        .max(axis=2)
        .sum(axis=1)
    )
    prediction = model.predict(images)
    np.testing.assert_allclose(prediction.scores, raw["defect_score"] + peaks, rtol=1e-5, atol=1e-5)
    save_model(model, tmp_path / "b")
    again, _ = load_model(tmp_path / "b")
    assert again.params["fused_peaks"] == "image"
    np.testing.assert_allclose(again.predict(images).scores, prediction.scores, atol=1e-5)
    runtime = deployed(tmp_path, images)
    np.testing.assert_allclose(runtime.scores, prediction.scores, atol=1e-3)
    assert geometry_of(images[0].shape, model.preprocessing_).left > 0


def test_a_refused_setting_names_the_model_not_the_last_checked_field():
    # check_params once reused the model's name as a loop variable: "a patience model".
    with pytest.raises(InputError, match="which a classifier model does not give"):
        get_model_class("classifier")(score="map")


def test_a_fused_score_reading_the_defect_maps_log_odds_is_what_torch_a_loaded_bundle_and_the_runtime_give(
    tiny_labelled, tmp_path
):
    from flawscope.data.preprocess import to_batch
    from flawscope.models.io import load_model, save_model

    targets = Targets(tiny_labelled["classes"], tiny_labelled["masks"])
    params = {**FAST, "score": "fused", "anomaly": "padim", "validation": 0.3, "fused_defect": "log_odds"}
    model = get_model_class("segmenter")(**params).fit(tiny_labelled["images"], targets)
    images = [*tiny_labelled["good_test"], *tiny_labelled["bad"]]
    batch, _ = to_batch(images, model.preprocessing_)
    raw = model.raw_outputs(batch)
    # the fused score's defect channel is the standardised log-odds of the defect map, which
    # itself stays a probability
    p = raw["defect_map"].astype(np.float64)
    assert p.min() >= 0.0 and p.max() <= 1.0
    fusion = model.fusion_.numpy()
    expected = (np.log(p / (1.0 - p)) - fusion[0, 2]) / fusion[1, 2]
    readable = (p > 1e-4) & (p < 1.0 - 1e-4)  # float32 probabilities lose the log-odds beyond these
    assert readable.mean() > 0.5
    np.testing.assert_allclose(raw["fusion_maps"][:, 1][readable], expected[readable], rtol=1e-3, atol=1e-3)
    prediction = model.predict(images)
    assert np.isfinite(prediction.scores).all()
    assert np.median(prediction.scores[4:]) > np.median(prediction.scores[:4])
    probability = get_model_class("segmenter")(**{**params, "fused_defect": "probability"})
    probability.fit(tiny_labelled["images"], targets)
    assert not np.allclose(probability.predict(images).scores, prediction.scores, atol=1e-3)
    save_model(model, tmp_path / "b")
    again, _ = load_model(tmp_path / "b")
    assert again.params["fused_defect"] == "log_odds"
    np.testing.assert_allclose(again.predict(images).scores, prediction.scores, atol=1e-5)
    runtime = deployed(tmp_path, images)
    np.testing.assert_allclose(runtime.scores, prediction.scores, atol=1e-3)

"""INT8 export: calibrated on good images, on the fp32 score scale, and little AUROC lost."""

from __future__ import annotations

import numpy as np
import pytest


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def test_int8_graph_loads_scores_finite_and_keeps_auroc(exported, tiny_set):
    from flawscope.runtime import Inspector

    fp32 = Inspector.load(exported.deployed, threads=2).score_many(tiny_set.images).scores
    int8 = Inspector.load(exported.deployed, int8=True, threads=2).score_many(tiny_set.images).scores

    assert np.isfinite(int8).all()
    assert not np.allclose(int8, fp32, rtol=1e-4)  # it really is a different (quantised) graph
    base, quantised = _auroc(tiny_set.labels, fp32), _auroc(tiny_set.labels, int8)
    print(f"\n{exported.name}: image AUROC fp32 {base:.4f}, int8 {quantised:.4f}")
    assert base >= 0.9  # the comparison means something only if the fp32 model separates the set
    assert base - quantised <= 0.02


def test_int8_scores_are_on_the_fp32_scale(exported, tiny_set):
    """The fp32-calibrated thresholds must still mean something for the INT8 graph."""
    from flawscope.bundle import read_bundle
    from flawscope.runtime import Inspector

    deploy = read_bundle(exported.deployed).manifest["deploy"]
    assert deploy["int8_calibration_images"] == len(exported.holdout)
    assert deploy["int8_score_scale"] > 0
    fp32 = Inspector.load(exported.deployed, threads=2)
    int8 = Inspector.load(exported.deployed, int8=True, threads=2)
    good = [im for im, label in zip(tiny_set.images, tiny_set.labels, strict=True) if label == 0]
    ratio = int8.score_many(good).scores / fp32.score_many(good).scores
    assert abs(float(np.median(ratio)) - 1.0) < 0.15

    same = [
        a.outcome == b.outcome
        for a, b in zip(fp32.inspect_many(tiny_set.images), int8.inspect_many(tiny_set.images), strict=True)
    ]
    assert np.mean(same) >= 0.85


def test_int8_export_needs_calibration_images(exported, tmp_path):
    from flawscope.errors import InputError
    from flawscope.export.onnx_export import export_bundle

    with pytest.raises(InputError, match="calibration"):
        export_bundle(exported.trained, tmp_path / "out", int8=True)
    assert not (tmp_path / "out").exists()


def test_export_refuses_to_write_over_the_trained_bundle(exported):
    from flawscope.errors import InputError
    from flawscope.export.onnx_export import export_bundle

    with pytest.raises(InputError, match="other than the trained bundle"):
        export_bundle(exported.trained, exported.trained)


def test_fp32_only_bundle_refuses_int8(exported, tmp_path):
    import shutil

    from flawscope.bundle import read_bundle, write_bundle
    from flawscope.errors import BundleError
    from flawscope.runtime import Inspector

    shutil.copytree(exported.deployed, tmp_path / "fp32")
    (tmp_path / "fp32" / "model.int8.onnx").unlink()
    manifest = read_bundle(exported.deployed).manifest
    deploy = {k: v for k, v in manifest["deploy"].items() if not k.startswith(("graph_int8", "int8"))}
    files = {k: v for k, v in manifest["files"].items() if k != "model.int8.onnx"}
    write_bundle(tmp_path / "fp32", {**manifest, "deploy": deploy, "files": files}, {})
    assert Inspector.load(tmp_path / "fp32").thresholds is not None
    with pytest.raises(BundleError, match="INT8"):
        Inspector.load(tmp_path / "fp32", int8=True)


def test_int8_head_is_refitted_on_the_training_images(exported):
    from flawscope.bundle import read_bundle

    deploy = read_bundle(exported.deployed).manifest["deploy"]
    assert deploy["int8_head_refit_images"] == exported.n_fit
    assert deploy["int8_calibration_images"] == len(exported.holdout)


def test_int8_validation_is_measured_and_recorded_against_the_budget(exported, tiny_set):
    from flawscope.bundle import read_bundle
    from flawscope.export.int8 import INT8_MAX_AUROC_LOSS
    from flawscope.runtime import Inspector

    deploy = read_bundle(exported.deployed).manifest["deploy"]
    checked = deploy["int8_validation"]
    assert checked["n_good"] == int((tiny_set.labels == 0).sum())
    assert checked["n_defect"] == int((tiny_set.labels == 1).sum())
    assert checked["auroc_loss"] == pytest.approx(checked["image_auroc_fp32"] - checked["image_auroc_int8"])
    assert deploy["int8_max_auroc_loss"] == INT8_MAX_AUROC_LOSS
    assert deploy["int8_within_tolerance"] == (checked["auroc_loss"] <= INT8_MAX_AUROC_LOSS)
    # The recorded AUROCs are the deployed graphs' on these parts, not numbers of another model.
    for graph, key in ((False, "image_auroc_fp32"), (True, "image_auroc_int8")):
        scores = Inspector.load(exported.deployed, int8=graph, threads=2).score_many(tiny_set.images).scores
        assert _auroc(tiny_set.labels, scores) == pytest.approx(checked[key], abs=0.01)


def test_int8_without_refit_or_labels_is_marked_unvalidated(exported, tmp_path, caplog):
    import logging

    from flawscope.bundle import read_bundle
    from flawscope.export.onnx_export import export_bundle
    from flawscope.runtime import Inspector

    with caplog.at_level(logging.WARNING, logger="flawscope.export.int8"):
        export_bundle(exported.trained, tmp_path / "d", int8=True, calibration_images=exported.holdout)
    assert "not refitted" in caplog.text
    assert "not validated" in caplog.text
    deploy = read_bundle(tmp_path / "d").manifest["deploy"]
    assert deploy["int8_head_refit_images"] == 0
    assert deploy["int8_validation"] is None
    assert deploy["int8_within_tolerance"] is None
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flawscope.runtime.inspector"):
        Inspector.load(tmp_path / "d", int8=True, threads=1)
    assert "not validated" in caplog.text


def test_int8_graph_outside_budget_warns_when_loaded(exported, tmp_path, caplog):
    import logging
    import shutil

    from flawscope.bundle import read_bundle, update_manifest
    from flawscope.runtime import Inspector

    shutil.copytree(exported.deployed, tmp_path / "d")
    deploy = read_bundle(tmp_path / "d").manifest["deploy"]
    checked = {**deploy["int8_validation"], "auroc_loss": 0.05}
    deploy = {**deploy, "int8_validation": checked, "int8_within_tolerance": False}
    update_manifest(read_bundle(tmp_path / "d"), deploy=deploy)
    with caplog.at_level(logging.WARNING, logger="flawscope.runtime.inspector"):
        Inspector.load(tmp_path / "d", int8=True, threads=1)
    assert "INT8 graph lost 0.050 image AUROC" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flawscope.runtime.inspector"):
        Inspector.load(tmp_path / "d", threads=1)  # the fp32 graph: nothing to warn about
    assert "INT8" not in caplog.text


def test_int8_graph_runs_the_quantised_trunk_its_head_was_refitted_on(exported, tiny_set):
    """The refit reads a separately quantised embedder: the deployed graph must quantise the same."""
    import copy

    from flawscope.bundle import read_bundle
    from flawscope.data.preprocess import to_batch
    from flawscope.export.inputs import int8_inputs
    from flawscope.export.int8 import _quantised_extractor
    from flawscope.runtime import Inspector

    model = exported.model
    inputs = int8_inputs(read_bundle(exported.trained).manifest)
    calibration, _ = to_batch(inputs.calibration, model.preprocessing_)
    head = copy.copy(model).fit_head(inputs.refit, _quantised_extractor(model, calibration))
    expected = head.predict(tiny_set.images).scores
    deploy = read_bundle(exported.deployed).manifest["deploy"]
    got = Inspector.load(exported.deployed, int8=True, threads=2).score_many(tiny_set.images).scores
    np.testing.assert_allclose(got * deploy["int8_score_scale"], expected, rtol=1e-3)

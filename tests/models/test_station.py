"""A station's anomaly head (``models/station.py``): PaDiM or PatchCore beside the trained heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.models.test_fine_level import FAST
from tests.models.test_supervised import deployed_inspector

from flawscope.errors import InputError
from flawscope.models import get_model_class
from flawscope.types import Targets

# FAST: one head, few epochs (these tests are about the anomaly head, not how well the head learns).
STATION = {**FAST, "score": "fused", "validation": 0.3}
BANK = 48


@pytest.fixture(scope="module")
def fitted(tiny_labelled):
    """A PatchCore station and a PaDiM station, same data and seed."""
    targets = Targets(tiny_labelled["classes"], tiny_labelled["masks"])
    seg = get_model_class("segmenter")
    patchcore = seg(**STATION, anomaly="patchcore", anomaly_bank=BANK).fit(tiny_labelled["images"], targets)
    padim = seg(**STATION, anomaly="padim").fit(tiny_labelled["images"], targets)
    return patchcore, padim


def test_the_anomaly_head_is_validated_by_name_and_defaults_stay_as_they_were():
    seg = get_model_class("segmenter")
    assert seg().params["anomaly"] is None
    for bad in (0, -3, 1.5, True, "512"):
        with pytest.raises(InputError, match="anomaly_bank"):
            seg(anomaly="patchcore", anomaly_bank=bad)
    with pytest.raises(InputError, match="anomaly"):
        seg(anomaly="patchcor")
    with pytest.raises(InputError, match="score"):
        seg(score="fused")  # a fused score needs one of the two heads
    seg(score="fused", anomaly="patchcore")  # accepted


def test_a_patchcore_station_keeps_a_coreset_of_good_patches_and_searches_it_exactly(fitted, tiny_labelled):
    from flawscope.data.preprocess import to_batch
    from flawscope.models.patchcore import NearestNeighbourHead, PatchCore

    model, padim = fitted
    anomaly = model.anomaly_
    assert isinstance(anomaly, PatchCore)
    coarse = model._embedder().coarse_channels
    assert anomaly.memory_bank_.shape == (BANK, coarse)
    assert anomaly.params["search"] == "exact" and anomaly.ivf_ is None
    assert isinstance(model.head().anomaly, NearestNeighbourHead)
    assert "patch_scores" in model.declaration().output_names
    images = [*tiny_labelled["good_test"], *tiny_labelled["bad"]]
    batch, _ = to_batch(images, model.preprocessing_)
    raw = model.raw_outputs(batch)
    # patch_scores: each cell's distance to its nearest bank patch, as a brute-force search gives it.
    features = model._runner()(batch)
    flat = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    brute = torch.cdist(flat.double(), anomaly.memory_bank_.double()).min(1).values
    np.testing.assert_allclose(raw["patch_scores"].reshape(-1), brute.numpy(), rtol=1e-3, atol=1e-3)
    # The fused score reads that evidence: the same heads with PaDiM's evidence score otherwise.
    other = padim.raw_outputs(batch)
    np.testing.assert_allclose(raw["defect_map"], other["defect_map"], atol=1e-5)
    np.testing.assert_allclose(raw["fusion_maps"][:, 1], other["fusion_maps"][:, 1], atol=1e-4)
    assert not np.allclose(raw["fusion_maps"][:, 0], other["fusion_maps"][:, 0], atol=1e-2)
    assert not np.allclose(model.predict(images).scores, padim.predict(images).scores, atol=1e-2)
    # The patchcore evidence was standardised on validation good parts: finite, positive spread.
    assert model.fusion_ is not None and torch.isfinite(model.fusion_).all() and (model.fusion_[1] > 0).all()


def test_a_patchcore_station_survives_save_load_and_runs_in_one_onnx_graph(fitted, tiny_labelled, tmp_path):
    import onnx

    from flawscope.models.io import load_model, save_model

    model, _ = fitted
    images = [*tiny_labelled["good_test"], *tiny_labelled["bad"]]
    prediction = model.predict(images)
    save_model(model, tmp_path / "b")
    again, bundle = load_model(tmp_path / "b")
    recorded = bundle.manifest.model.hyperparameters
    assert recorded["anomaly"] == "patchcore" and recorded["anomaly_bank"] == BANK
    assert torch.equal(again.anomaly_.memory_bank_, model.anomaly_.memory_bank_)
    np.testing.assert_allclose(again.predict(images).scores, prediction.scores, atol=1e-5)
    inspector = deployed_inspector(tmp_path)
    np.testing.assert_allclose(inspector.score_many(images).scores, prediction.scores, atol=1e-3)
    graph = onnx.load(str(tmp_path / "d" / "model.onnx")).graph
    assert "ReduceMin" in {node.op_type for node in graph.node}  # the search is in the graph
    assert "patch_scores" in [output.name for output in graph.output]


def test_int8_export_refits_the_patchcore_coreset_on_the_quantised_features(fitted, tiny_labelled, tmp_path):
    from flawscope.models.io import load_model, save_model

    model, _ = fitted
    save_model(model, tmp_path / "b")
    again, _ = load_model(tmp_path / "b")
    before = again.anomaly_.memory_bank_.clone()
    # Refit on features moved a little (as 8-bit rounding moves them): a new coreset of those.
    runner = again._runner()
    again.fit_head(tiny_labelled["good"], lambda batch: runner(batch) + 0.05)
    assert again.anomaly_.memory_bank_.shape == before.shape
    assert not torch.equal(again.anomaly_.memory_bank_, before)
    assert model.anomaly_.memory_bank_ is not again.anomaly_.memory_bank_  # the trained model's is kept
    inspector = deployed_inspector(tmp_path, int8=True, good=tiny_labelled["good"])
    scores = inspector.score_many([*tiny_labelled["good_test"], *tiny_labelled["bad"]]).scores
    assert np.isfinite(scores).all()


def test_a_fine_patchcore_station_searches_the_coarse_channels_only(fitted, tiny_labelled):
    from flawscope.data.preprocess import to_batch

    plain, _ = fitted
    targets = Targets(tiny_labelled["classes"], tiny_labelled["masks"])
    fine = get_model_class("segmenter")(
        **STATION, anomaly="patchcore", anomaly_bank=BANK, fine_level=True
    ).fit(tiny_labelled["images"], targets)
    coarse = plain._embedder().channels
    assert fine._embedder().channels > coarse
    assert torch.equal(fine.anomaly_.memory_bank_, plain.anomaly_.memory_bank_)
    batch, _ = to_batch(tiny_labelled["bad"], fine.preprocessing_)
    ours, theirs = fine.raw_outputs(batch), plain.raw_outputs(batch)
    np.testing.assert_allclose(ours["patch_scores"], theirs["patch_scores"], rtol=1e-5, atol=1e-4)


def test_a_padim_station_saved_before_anomaly_bank_existed_loads_as_padim(fitted, tiny_labelled):
    from flawscope.models.padim import PaDiM

    _, padim = fitted
    seg = get_model_class("segmenter")
    old = {k: v for k, v in padim.hyperparameters().items() if k != "anomaly_bank"}
    again = seg(**seg.saved_params(old))
    assert again.params["anomaly"] == "padim"
    again.load_declaration(padim.declaration())
    again.load_state_tensors(padim.state_tensors())
    again.preprocessing_ = padim.preprocessing_
    assert isinstance(again.anomaly_, PaDiM)
    images = [*tiny_labelled["good_test"], *tiny_labelled["bad"]]
    np.testing.assert_allclose(again.predict(images).scores, padim.predict(images).scores, atol=1e-5)

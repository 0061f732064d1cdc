"""``fine_level``: the trained heads read the trunk's stride-4 map; the PaDiM head of a station does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.models.test_supervised import deployed

from flawscope.errors import InputError
from flawscope.models import get_model_class
from flawscope.types import Targets

# One head, few epochs: these tests are about what the head reads, not how well it learns.
FAST = {"image_size": 64, "engine": "torch", "views": 0, "patience": 0, "threads": 1,
        "epochs": 6, "width": 16, "ensemble": 1}  # fmt: skip
STATION = {**FAST, "score": "fused", "anomaly": "padim", "validation": 0.3}


def test_fine_level_is_off_by_default_and_for_older_bundles_and_a_bad_setting_is_named():
    seg = get_model_class("segmenter")
    assert seg().params["fine_level"] is False
    old = {k: v for k, v in seg(fine_level=True).hyperparameters().items() if k != "fine_level"}
    assert seg(**seg.saved_params(old)).params["fine_level"] is False  # trained before it existed
    assert seg.saved_params({**old, "fine_level": True})["fine_level"] is True
    with pytest.raises(InputError, match="fine_level"):
        seg(fine_level="yes")
    with pytest.raises(InputError, match="fine_level"):
        get_model_class("classifier")(fine_level=True, finetune="last")


def test_a_fine_station_feeds_the_level_to_its_head_only_and_survives_save_load_and_export(
    tiny_labelled, tmp_path
):
    from flawscope.data.preprocess import to_batch
    from flawscope.models.io import load_model, save_model

    targets = Targets(tiny_labelled["classes"], tiny_labelled["masks"])
    fine = get_model_class("segmenter")(**STATION, fine_level=True).fit(tiny_labelled["images"], targets)
    plain = get_model_class("segmenter")(**STATION).fit(tiny_labelled["images"], targets)
    coarse = plain._embedder().channels
    # EfficientNet-Lite0's stride-4 stage: 24 channels, 2 x 2 of them per stride-8 cell.
    assert fine._embedder().channels == coarse + 96
    assert fine.head_module_.mean.shape == (coarse + 96,) and plain.head_module_.mean.shape == (coarse,)
    assert torch.equal(fine.anomaly_.channels_, torch.arange(coarse))
    images = [*tiny_labelled["good_test"], *tiny_labelled["bad"]]
    batch, _ = to_batch(images, fine.preprocessing_)
    raw, before = fine.raw_outputs(batch), plain.raw_outputs(batch)
    # The PaDiM evidence is what it was without the level; the trained head's maps are not.
    np.testing.assert_allclose(raw["patch_scores"], before["patch_scores"], rtol=1e-5, atol=1e-4)
    assert raw["defect_map"].shape == before["defect_map"].shape
    assert not np.allclose(raw["defect_map"], before["defect_map"], atol=1e-3)
    prediction = fine.predict(images)
    assert np.isfinite(prediction.scores).all()
    save_model(fine, tmp_path / "b")
    again, bundle = load_model(tmp_path / "b")
    assert bundle.manifest.model.hyperparameters["fine_level"] is True and again.params["fine_level"]
    np.testing.assert_allclose(again.predict(images).scores, prediction.scores, atol=1e-5)
    runtime = deployed(tmp_path, images)
    np.testing.assert_allclose(runtime.scores, prediction.scores, atol=1e-3)
    # INT8 export re-learns the PaDiM head on the quantised trunk's features: still the coarse ones.
    again.fit_head(tiny_labelled["good"], again._runner())
    assert torch.equal(again.anomaly_.channels_, torch.arange(coarse))
    assert again.raw_outputs(batch)["patch_scores"].shape == raw["patch_scores"].shape


def test_a_bank_extracted_without_the_fine_level_is_refused(tiny_labelled):
    targets = Targets(tiny_labelled["classes"], tiny_labelled["masks"])
    images = tiny_labelled["images"]
    everything = list(range(len(images)))
    plain = get_model_class("segmenter")(**FAST)
    bank = plain.make_bank(images, targets, everything)
    fine = get_model_class("segmenter")(**FAST, fine_level=True)
    fine.classes_, fine.preprocessing_ = plain.classes_, plain.preprocessing_
    with pytest.raises(InputError, match="fine_level"):
        fine.fit_bank(bank, targets, everything[:-4], everything[-4:])


def test_the_bank_key_changes_with_the_fine_level_and_not_without_it():
    from flawscope.data.preprocess import Preprocessing
    from flawscope.features.cache import bank_key

    pre = Preprocessing(64, 64, "fit_pad", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    args = (["a", "b"], pre, "efficientnet_lite0", "w", 3, None, [], ["good", "x"])
    assert bank_key(*args) == bank_key(*args, fine_level=False)
    assert bank_key(*args, fine_level=True) != bank_key(*args)

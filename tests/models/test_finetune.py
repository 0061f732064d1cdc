"""A classifier whose trunk is fine-tuned (``finetune="last"`` or ``"full"``): trained, saved, exported."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flawscope.errors import InputError
from flawscope.features.backbones import load_backbone
from flawscope.models import get_model_class
from flawscope.types import Targets

FAST = {"image_size": 64, "engine": "torch", "epochs": 8, "views": 1, "patience": 0, "width": 16}


def _changed(model) -> set[str]:
    """Names of the trunk tensors that differ from the ImageNet weights."""
    imagenet = load_backbone(model.config.backbone).state_dict()
    tuned = model._embedder().backbone.state_dict()
    return {k for k, v in tuned.items() if not torch.equal(v, imagenet[k])}


@pytest.fixture(scope="module")
def tuned(tiny_labelled):
    model = get_model_class("classifier")(**FAST, finetune="last", finetune_epochs=2, validation=0.25)
    model.fit(tiny_labelled["images"], Targets(tiny_labelled["classes"]))
    return model


def test_last_blocks_are_tuned_and_the_rest_stays_imagenet(tuned):
    trunk = tuned._embedder().backbone
    changed = _changed(tuned)
    assert changed, "fine-tuning changed no trunk weight"
    first_tuned = trunk.tap8 + 1
    assert all(int(k.split(".")[1]) >= first_tuned for k in changed if k.startswith("_blocks."))
    assert not [k for k in changed if k.startswith(("_conv_stem", "_bn0"))]
    log = tuned.training_["log"]["finetune"]
    assert log["mode"] == "last" and 1 <= log["best_epoch"] <= log["epochs_run"] <= 2
    assert len(log["validation_accuracy"]) == log["epochs_run"]
    assert not any(p.requires_grad for p in trunk.parameters())


def test_tuned_model_separates_defects(tuned, tiny_labelled):
    good = tuned.predict(tiny_labelled["good_test"]).scores
    bad = tuned.predict(tiny_labelled["bad"]).scores
    assert np.median(bad) > np.median(good)


def test_tuned_weights_survive_save_load_and_onnx(tuned, tiny_labelled, tmp_path):
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.io import load_model, save_model
    from flawscope.runtime import Inspector

    save_model(tuned, tmp_path / "b")
    loaded, _ = load_model(tmp_path / "b")
    assert _changed(loaded) == _changed(tuned)
    assert loaded.hyperparameters()["finetune"] == "last"
    images = [*tiny_labelled["good_test"], *tiny_labelled["bad"]]
    expected = tuned.predict(images)
    np.testing.assert_allclose(loaded.predict(images).class_probs, expected.class_probs, atol=1e-6)
    export_bundle(tmp_path / "b", tmp_path / "d")
    runtime = Inspector.load(tmp_path / "d").score_many(images)
    np.testing.assert_allclose(runtime.scores, expected.scores, atol=1e-3)
    # The ImageNet trunk gives other scores: the exported graph carries the tuned weights.
    frozen = get_model_class("classifier")(**FAST)
    frozen.classes_, frozen.preprocessing_ = tuned.classes_, tuned.preprocessing_
    frozen.load_state_tensors({k: v for k, v in tuned.state_tensors().items() if not k.startswith("trunk.")})
    assert not np.allclose(frozen.predict(images).scores, expected.scores, atol=1e-3)


def test_full_fine_tuning_changes_the_stem(tiny_labelled):
    model = get_model_class("classifier")(**{**FAST, "views": 0}, finetune="full", finetune_epochs=1)
    model.fit(tiny_labelled["images"], Targets(tiny_labelled["classes"]))
    assert any(k.startswith("_conv_stem") for k in _changed(model))
    assert set(model.state_tensors()) >= {f"trunk.{k}" for k in _changed(model)}


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("classifier", {"finetune": "some"}, "finetune"),
        ("segmenter", {"finetune": "last"}, "implemented for the classifier"),
        ("detector", {"finetune": "last"}, "implemented for the classifier"),
        ("classifier", {"finetune_epochs": 0}, "finetune_epochs"),
        ("classifier", {"finetune_lr": 0}, "finetune_lr"),
        ("classifier", {"finetune_patience": -1}, "finetune_patience"),
        ("classifier", {"finetune_augment": "often"}, "finetune_augment"),
        ("box_detector", {"finetune": "last", "finetune_augment": "fresh"}, "no fresh views"),
    ],
)
def test_bad_finetune_settings_name_the_field(name, params, message):
    with pytest.raises(InputError, match=message):
        get_model_class(name)(**params)


@pytest.mark.parametrize("patience", [{}, {"finetune_patience": 0}])
def test_fine_tuning_runs_every_epoch_by_default_and_keeps_the_best(tiny_labelled, patience):
    # Early stopping inside a one-cycle schedule stopped ELPV at its high learning rate (epoch 3 of 6).
    model = get_model_class("classifier")(
        **{**FAST, "views": 0, "epochs": 2}, finetune="last", finetune_epochs=4, validation=0.25, **patience
    )
    model.fit(tiny_labelled["images"], Targets(tiny_labelled["classes"]))
    log = model.training_["log"]["finetune"]
    assert log["epochs_run"] == 4
    accuracy = log["validation_accuracy"]
    assert len(accuracy) == 4
    assert accuracy[log["best_epoch"] - 1] == max(accuracy)


@pytest.mark.parametrize("mode", ["fixed", "fresh"])
def test_fresh_augmentation_draws_new_views_every_epoch(tiny_labelled, monkeypatch, mode):
    import flawscope.models.finetune as finetune

    made = []  # (views asked for, the augmented images) of each call inside fine-tuning

    def recording(images, masks, spec):
        out = real(images, masks, spec)
        made.append((spec.views, [np.array(im, copy=True) for im in out[0]]))
        return out

    real = finetune.augmented_views
    monkeypatch.setattr(finetune, "augmented_views", recording)
    augment = {"HorizontalFlip": {"p": 0.5}, "RandomBrightnessContrast": {"p": 1.0}}
    model = get_model_class("classifier")(
        **{**FAST, "epochs": 1}, finetune="last", finetune_epochs=3, validation=0.25,
        augment=augment, finetune_augment=mode,
    )  # fmt: skip
    model.fit(tiny_labelled["images"], Targets(tiny_labelled["classes"]))
    log = model.training_["log"]["finetune"]
    assert log["augment"] == mode and log["epochs_run"] == 3
    drawn = [images for views, images in made if views and images]
    if mode == "fixed":  # one set of views, made before the cache and drawn from every epoch
        assert len(drawn) == 1 and "fresh_seconds" not in log
        return
    assert len(drawn) == 3 and log["fresh_seconds"] > 0  # one new draw of every training image an epoch
    n = len(drawn[0])
    assert all(len(d) == n for d in drawn) and 0 < n < len(tiny_labelled["images"])
    for a, b in ((0, 1), (1, 2), (0, 2)):
        assert not all(np.array_equal(x, y) for x, y in zip(drawn[a], drawn[b], strict=True))
    assert model.hyperparameters()["finetune_augment"] == "fresh"


def test_finetune_patience_reaches_the_fine_tuning(tiny_labelled, monkeypatch):
    import flawscope.models.supervised as supervised

    seen = []

    def recording(*args, **kwargs):
        seen.append(args[8].patience)  # the FinetuneConfig
        return real(*args, **kwargs)

    real = supervised.finetune_trunk
    monkeypatch.setattr(supervised, "finetune_trunk", recording)
    model = get_model_class("classifier")(
        **{**FAST, "views": 0, "epochs": 1}, finetune="last", finetune_epochs=1, finetune_patience=3
    )
    model.fit(tiny_labelled["images"], Targets(tiny_labelled["classes"]))
    assert seen == [3]


def test_a_backbone_that_cannot_be_tuned_is_refused_before_training(tiny_labelled):
    model = get_model_class("classifier")(**FAST, backbone="mobilenet_v2", finetune="last")
    with pytest.raises(InputError, match="EfficientNet-Lite"):
        model.fit(tiny_labelled["images"], Targets(tiny_labelled["classes"]))


def test_a_feature_bank_alone_cannot_fine_tune(tiny_labelled):
    model = get_model_class("classifier")(**FAST, finetune="last")
    targets = Targets(tiny_labelled["classes"])
    with pytest.raises(InputError, match="fine-tuned by fit"):
        model.make_bank(tiny_labelled["images"], targets, list(range(len(targets))))


def test_finetune_head_keep_uses_the_head_trained_with_the_trunk(tiny_labelled, monkeypatch, tmp_path):
    import flawscope.models.supervised as supervised
    from flawscope.models.io import load_model, save_model

    heads = []

    def recording(*args, **kwargs):
        done = real(*args, **kwargs)
        heads.append({k: v.clone() for k, v in done.head.state_dict().items()})
        return done

    real = supervised.finetune_trunk
    monkeypatch.setattr(supervised, "finetune_trunk", recording)
    model = get_model_class("classifier")(
        **FAST, finetune="last", finetune_epochs=2, validation=0.25, finetune_head="keep"
    )
    model.fit(tiny_labelled["images"], Targets(tiny_labelled["classes"]))
    kept = model.head_module_.state_dict()
    assert heads and all(torch.equal(kept[k], v) for k, v in heads[0].items())
    assert model.training_["log"]["epochs_run"] == 0  # no second head was trained
    assert any("kept" in note for note in model.training_["log"]["notes"])
    good = model.predict(tiny_labelled["good_test"]).scores
    assert np.median(model.predict(tiny_labelled["bad"]).scores) > np.median(good)
    save_model(model, tmp_path / "b")
    loaded, _ = load_model(tmp_path / "b")
    np.testing.assert_allclose(
        loaded.predict(tiny_labelled["bad"]).scores, model.predict(tiny_labelled["bad"]).scores, atol=1e-6
    )


def test_finetune_head_best_keeps_the_better_head_on_validation(tiny_labelled):
    model = get_model_class("classifier")(
        **FAST, finetune="last", finetune_epochs=2, validation=0.25, finetune_head="best"
    )
    model.fit(tiny_labelled["images"], Targets(tiny_labelled["classes"]))
    choice = model.training_["head_choice"]
    other = "keep" if choice["chosen"] == "retrain" else "retrain"

    def rank(name):
        return choice[name]["validation_accuracy"], -choice[name]["validation_log_loss"]

    assert rank(choice["chosen"]) >= rank(other)
    assert (model.training_["log"]["epochs_run"] == 0) == (choice["chosen"] == "keep")


def test_finetune_head_is_checked_and_means_nothing_for_a_frozen_trunk(tiny_labelled):
    with pytest.raises(InputError, match="finetune_head"):
        get_model_class("classifier")(finetune_head="both")
    model = get_model_class("classifier")(**FAST, finetune_head="keep")  # frozen: a head is trained
    model.fit(tiny_labelled["images"], Targets(tiny_labelled["classes"]))
    assert model.training_["log"]["epochs_run"] > 0 and "head_choice" not in model.training_


def test_by_default_the_head_is_chosen_on_validation_and_older_bundles_read_as_retrained(tuned):
    choice = tuned.training_["head_choice"]  # the fixture keeps every finetune_head default
    assert choice["chosen"] in ("retrain", "keep") and set(choice) == {"chosen", "retrain", "keep"}
    cls = type(tuned)
    assert cls.saved_params({"finetune": "last"})["finetune_head"] == "retrain"  # saved before it existed
    assert cls.saved_params({"finetune_head": "keep"})["finetune_head"] == "keep"

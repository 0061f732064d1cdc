"""``soft_labels``: the image loss learns labelled defect probabilities instead of the hard classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.models.test_training import _bank

from flawscope.errors import InputError
from flawscope.models import get_model_class
from flawscope.models.heads import DefectHead
from flawscope.models.supervised_targets import soft_targets
from flawscope.models.training import TrainConfig, train_head
from flawscope.types import Targets

FAST = {"image_size": 64, "engine": "torch", "epochs": 2, "views": 0, "patience": 0, "width": 16}


def _binary(tiny_labelled, defect_p: float) -> Targets:
    """The tiny parts as good / defective, every defect labelled with probability ``defect_p``."""
    classes = tuple("good" if c == "good" else "defective" for c in tiny_labelled["classes"])
    return Targets(classes, probabilities=tuple(0.0 if c == "good" else defect_p for c in classes))


def test_targets_carry_probabilities_through_select_and_check_their_count():
    targets = Targets(("good", "crack", "good"), probabilities=(0.0, 2 / 3, 1 / 3))
    assert targets.select([2, 1]).probabilities == (1 / 3, 2 / 3)
    assert Targets(("good",)).select([0]).probabilities == ()
    with pytest.raises(ValueError, match="probabilities"):
        Targets(("good", "crack"), probabilities=(0.0,))


def test_soft_targets_are_the_labelled_probabilities():
    targets = Targets(("good", "crack", "good", "crack"), probabilities=(0.0, 2 / 3, 1 / 3, 1.0))
    soft = soft_targets(targets, ("good", "crack"))
    assert soft.dtype == np.float32 and soft.shape == (4, 2)
    np.testing.assert_allclose(soft[:, 1], [0.0, 2 / 3, 1 / 3, 1.0], atol=1e-6)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)


TWO, THREE = ("good", "crack"), ("good", "crack", "spot")


@pytest.mark.parametrize(
    ("targets", "classes", "field", "message"),
    [
        (Targets(TWO), TWO, "soft_labels", "carry none"),
        (Targets(THREE, probabilities=(0.0, 1.0, 1.0)), THREE, "soft_labels", "one defect class"),
        (Targets(TWO, probabilities=(0.0, 1.5)), TWO, "probability", "image 1"),
        (Targets(TWO, probabilities=(np.nan, 1.0)), TWO, "probability", "image 0"),
        (Targets(TWO, probabilities=(0.0, 0.2)), TWO, "probability", "'crack'"),
        (Targets(TWO, probabilities=(2 / 3, 1.0)), TWO, "probability", "'good'"),
    ],
)
def test_bad_probabilities_name_the_field(targets, classes, field, message):
    with pytest.raises(InputError, match=message) as caught:
        soft_targets(targets, classes)
    assert caught.value.where == field


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("classifier", {"soft_labels": "yes"}, "true or false"),
        ("classifier", {"soft_labels": 1}, "true or false"),
        ("segmenter", {"soft_labels": True}, "implemented for the classifier"),
        ("box_detector", {"soft_labels": True}, "implemented for the classifier"),
    ],
)
def test_bad_soft_labels_settings_name_the_field(name, params, message):
    with pytest.raises(InputError, match=message) as caught:
        get_model_class(name)(**params)
    assert caught.value.where == "soft_labels"


def test_labels_without_probabilities_are_refused_before_training(tiny_labelled, monkeypatch):
    import flawscope.models.supervised as supervised

    def never(*args, **kwargs):
        raise AssertionError("fine-tuning started")

    monkeypatch.setattr(supervised, "finetune_trunk", never)
    model = get_model_class("classifier")(**FAST, finetune="last", soft_labels=True)
    classes = tuple("good" if c == "good" else "defective" for c in tiny_labelled["classes"])
    with pytest.raises(InputError, match="carry none"):
        model.fit(tiny_labelled["images"], Targets(classes))


def test_a_head_trained_on_soft_targets_learns_the_probability_not_the_class():
    bank, labels = _bank(30, shift=4.0)  # every third a defect, easily separated
    rows = np.arange(len(labels))
    config = TrainConfig(40, 8, 2e-2, 0.0, 0, 1.0, 0.0, False, 0, 1)
    p = np.where(labels == 1, 0.6, 0.0)
    soft = np.stack([1 - p, p], axis=1).astype(np.float32)
    defect = {}
    for name, targets in (("hard", None), ("soft", soft)):
        head = DefectHead(8, 8, 2, 0, False)
        train_head(head, bank, rows, rows[:0], labels, config, soft=targets)
        with torch.no_grad():
            _, logits = head(bank.features.float())
        defect[name] = torch.softmax(logits, 1)[:, 1].numpy()[labels == 1]
    # Hard labels drive the defects to certainty; the soft target 0.6 (scaled by the balanced
    # class weights: 2 x 0.6 / (0.75 x 0.4 + 1.5 x 0.6) = 0.75) keeps them well below it.
    assert defect["hard"].mean() > 0.95
    assert 0.6 < defect["soft"].mean() < 0.88


def test_soft_labels_reach_the_fine_tuning_and_the_head_and_are_saved(tiny_labelled, monkeypatch, tmp_path):
    import flawscope.models.supervised as supervised
    from flawscope.models.io import load_model, save_model

    seen: dict[str, np.ndarray] = {}

    def tuning(*args, **kwargs):
        seen["finetune"] = args[11]
        return real_tuning(*args, **kwargs)

    def heads(*args, **kwargs):
        seen["head"], seen["bank_image"] = args[9], args[2].image
        return real_heads(*args, **kwargs)

    real_tuning, real_heads = supervised.finetune_trunk, supervised.train_ensemble
    monkeypatch.setattr(supervised, "finetune_trunk", tuning)
    monkeypatch.setattr(supervised, "train_ensemble", heads)
    targets = _binary(tiny_labelled, 2 / 3)
    model = get_model_class("classifier")(
        **FAST, finetune="last", finetune_epochs=1, validation=0.25, finetune_head="best", soft_labels=True
    )
    model.fit(tiny_labelled["images"], targets)
    expected = np.array(targets.probabilities, np.float32)
    np.testing.assert_allclose(seen["finetune"][:, 1], expected, atol=1e-6)
    np.testing.assert_allclose(seen["head"][:, 1], expected[seen["bank_image"]], atol=1e-6)
    assert model.training_["log"]["finetune"]["soft_labels"] is True
    save_model(model, tmp_path / "b")
    loaded, _ = load_model(tmp_path / "b")
    assert loaded.hyperparameters()["soft_labels"] is True
    np.testing.assert_allclose(
        loaded.predict(tiny_labelled["bad"]).scores, model.predict(tiny_labelled["bad"]).scores, atol=1e-6
    )


def test_without_soft_labels_the_losses_get_the_classes_and_old_bundles_read_as_hard(tiny_labelled):
    model = get_model_class("classifier")(**FAST, finetune="last", finetune_epochs=1, validation=0.25)
    assert model.hyperparameters()["soft_labels"] is False
    model.fit(tiny_labelled["images"], _binary(tiny_labelled, 1.0))  # probabilities present, not asked for
    assert "soft_labels" not in model.training_["log"]["finetune"]
    cls = type(model)
    assert cls(**cls.saved_params({"finetune": "last"})).hyperparameters()["soft_labels"] is False

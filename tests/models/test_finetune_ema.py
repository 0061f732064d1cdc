"""Fine-tuning with a moving average of the weights (``finetune_ema``): judged, kept, saved, exported."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from flawscope.errors import InputError
from flawscope.models import get_model_class
from flawscope.types import Targets

# One thread: the comparisons of runs are exact, and with threads=None the count follows the load.
FAST = {"image_size": 64, "engine": "torch", "epochs": 2, "views": 0, "patience": 0, "width": 16}
FAST["threads"] = 1
TUNE = {"finetune": "last", "finetune_epochs": 3, "validation": 0.25}


def _tuned_blocks(model) -> dict[str, torch.Tensor]:
    """The trunk parameters ``finetune="last"`` trains, by name, in the optimiser's order."""
    trunk = model._embedder().backbone
    prefixes = tuple(f"_blocks.{i}." for i in range(trunk.tap8 + 1, len(trunk._blocks)))
    return {k: p.detach().clone() for k, p in trunk.named_parameters() if k.startswith(prefixes)}


def _fit_recording_steps(images, classes, **params):
    """Fit a classifier; return it and the tuned trunk weights after every fine-tuning step."""
    model = get_model_class("classifier")(**FAST, **TUNE, **params)
    steps: list[list[torch.Tensor]] = []

    def after_step(optimiser, args, kwargs):
        trunk_ids = {id(p) for p in model._embedder().backbone.parameters()}
        first = optimiser.param_groups[0]["params"]
        if first and id(first[0]) in trunk_ids:  # the fine-tuning's optimiser, not a head's
            steps.append([p.detach().clone() for p in first])

    handle = register_optimizer_step_post_hook(after_step)
    try:
        model.fit(images, Targets(classes))
    finally:
        handle.remove()
    return model, steps


@pytest.fixture(scope="module")
def averaged(tiny_labelled):
    return _fit_recording_steps(tiny_labelled["images"], tiny_labelled["classes"], finetune_ema=0.6)


def test_the_kept_trunk_is_the_hand_computed_average_at_the_epoch_kept(averaged):
    model, steps = averaged
    log = model.training_["log"]["finetune"]
    assert log["ema"] == 0.6 and model.hyperparameters()["finetune_ema"] == 0.6
    assert len(steps) % log["epochs_run"] == 0
    per_epoch = len(steps) // log["epochs_run"]
    assert per_epoch >= 2  # several steps an epoch (the arithmetic itself: test_weight_average)
    average = None
    for t, live in enumerate(steps[: log["best_epoch"] * per_epoch], start=1):
        d = min(0.6, (t - 1) / t)
        average = (
            live if average is None else [d * a + (1 - d) * w for a, w in zip(average, live, strict=True)]
        )
    assert average is not None
    kept = _tuned_blocks(model)
    assert len(kept) == len(average)
    for (name, value), expected in zip(kept.items(), average, strict=True):
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6, msg=name)
    # ...which is not the live weights of that step: the average was kept, not the last step.
    last_live = steps[log["best_epoch"] * per_epoch - 1]
    assert any(not torch.allclose(v, w) for v, w in zip(kept.values(), last_live, strict=True))


@pytest.mark.parametrize("off", [{}, {"finetune_ema": 0}, {"finetune_ema": None}])
def test_off_is_exactly_the_fine_tuning_without_an_average(tiny_labelled, averaged, off):
    model, steps = _fit_recording_steps(tiny_labelled["images"], tiny_labelled["classes"], **off)
    log = model.training_["log"]["finetune"]
    assert "ema" not in log
    # Without the average the kept trunk is the live weights after the epoch kept's last step.
    per_epoch = len(steps) // log["epochs_run"]
    last_live = steps[log["best_epoch"] * per_epoch - 1]
    for value, expected in zip(_tuned_blocks(model).values(), last_live, strict=True):
        assert torch.equal(value, expected)
    # The live trajectory is the same as with the average on: the average does not touch training.
    _, averaged_steps = averaged
    for a, b in zip(steps, averaged_steps, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_averaged_bundle_saves_loads_and_exports(averaged, tiny_labelled, tmp_path):
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.io import load_model, save_model
    from flawscope.runtime import Inspector

    model, _ = averaged
    save_model(model, tmp_path / "b")
    loaded, _ = load_model(tmp_path / "b")
    assert loaded.hyperparameters()["finetune_ema"] == 0.6
    for name, value in _tuned_blocks(model).items():
        assert torch.equal(_tuned_blocks(loaded)[name], value)
    images = [*tiny_labelled["good_test"], *tiny_labelled["bad"]]
    expected = model.predict(images)
    np.testing.assert_allclose(loaded.predict(images).class_probs, expected.class_probs, atol=1e-6)
    export_bundle(tmp_path / "b", tmp_path / "d")
    np.testing.assert_allclose(
        Inspector.load(tmp_path / "d").score_many(images).scores, expected.scores, atol=1e-3
    )


def test_bundles_from_before_finetune_ema_read_as_off():
    cls = get_model_class("classifier")
    assert cls.saved_params({"finetune": "last"})["finetune_ema"] == 0.0
    assert cls.saved_params({"finetune_ema": 0.99})["finetune_ema"] == 0.99


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("classifier", {"finetune_ema": 1.0}, "finetune_ema"),
        ("classifier", {"finetune_ema": -0.1}, "finetune_ema"),
        ("classifier", {"finetune_ema": True}, "finetune_ema"),
        ("classifier", {"finetune_ema": "0.99"}, "finetune_ema"),
        ("box_detector", {"finetune": "last", "finetune_ema": 0.99}, "finetune_ema"),
    ],
)
def test_bad_finetune_ema_names_the_field(name, params, message):
    with pytest.raises(InputError, match=message):
        get_model_class(name)(**params)

"""Heads of several seeds averaged inside one head: reproducible, saved, exported as one head."""

from __future__ import annotations

import numpy as np
import torch

from flawscope.models import get_model_class
from flawscope.models.ensemble import HeadEnsemble, member_count
from flawscope.models.heads import DefectHead
from flawscope.types import Targets

FAST = {"image_size": 64, "engine": "torch", "epochs": 4, "views": 0, "width": 8, "threads": 1}


def test_the_ensemble_averages_its_members_logits():
    torch.manual_seed(0)
    members = [DefectHead(6, 4, 2, 2, True).eval() for _ in range(3)]
    ensemble = HeadEnsemble(members).eval()
    x = torch.randn(2, 6, 8, 8)
    seg, logits = ensemble(x)
    outs = [m(x) for m in members]
    assert seg is not None
    torch.testing.assert_close(logits, torch.stack([o[1] for o in outs]).mean(0))
    torch.testing.assert_close(seg, torch.stack([o[0] for o in outs]).mean(0))  # type: ignore[misc]
    assert member_count(ensemble.state_dict()) == 3 and member_count(members[0].state_dict()) == 0


def test_an_ensemble_is_reproducible_saved_and_exported_as_one_head(tiny_labelled, tmp_path):
    from flawscope.bundle import read_bundle, update_manifest
    from flawscope.decide.thresholds import ThresholdHistory, Thresholds
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.io import load_model, save_model
    from flawscope.runtime import Inspector

    targets = Targets(tiny_labelled["classes"], tiny_labelled["masks"])
    images = [*tiny_labelled["good_test"], *tiny_labelled["bad"]]
    fitted = []
    for ensemble in (2, 2, 1):
        model = get_model_class("mixed")(**FAST, ensemble=ensemble, smooth=2, validation=0.3)
        fitted.append(model.fit(tiny_labelled["images"], targets))
    first, again, single = fitted
    assert isinstance(first.head_module_, HeadEnsemble) and isinstance(single.head_module_, DefectHead)
    members = first.training_["log"]["members"]
    assert len(members) == 2 and "members" not in single.training_["log"]
    # Same data and seed, same ensemble; its first member is the single head of that seed.
    scores = first.predict(images).scores
    np.testing.assert_array_equal(scores, again.predict(images).scores)
    assert members[0]["validation_loss"] == single.training_["log"]["validation_loss"]
    assert not np.allclose(scores, single.predict(images).scores)
    save_model(first, tmp_path / "b")
    loaded, _ = load_model(tmp_path / "b")
    assert isinstance(loaded.head_module_, HeadEnsemble) and len(loaded.head_module_.members) == 2
    np.testing.assert_allclose(loaded.predict(images).scores, scores, atol=1e-6)
    update_manifest(read_bundle(tmp_path / "b"), thresholds=ThresholdHistory().add(Thresholds.explicit(0.5)))
    export_bundle(tmp_path / "b", tmp_path / "d")
    runtime = Inspector.load(tmp_path / "d", allow_unsigned=True).score_many(images)
    np.testing.assert_allclose(runtime.scores, scores, atol=1e-3)


def test_bad_ensemble_and_smooth_values_are_refused():
    import pytest

    from flawscope.errors import InputError

    for name in ("ensemble", "smooth"):
        with pytest.raises(InputError, match=name):
            get_model_class("mixed")(**{name: 0})

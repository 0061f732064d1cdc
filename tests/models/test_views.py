"""Test-time views (``tta``): the views, their averaging, the exported graph and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flawscope.declaration import OutputKind
from flawscope.errors import InputError
from flawscope.models import get_model_class
from flawscope.models.views import VIEW_SETS, combine, dihedral, expand, undo

SQUARE = {"image_size": 64, "canvas": (64, 64), "batch_size": 4, "engine": "torch"}
TRAINED = {"epochs": 12, "views": 0, "validation": 0.25, "patience": 0, "width": 16}


def test_the_eight_views_are_distinct_and_undone():
    x = torch.arange(2 * 5 * 5, dtype=torch.float32).reshape(2, 5, 5)  # no symmetry of its own
    seen = [dihedral(x, k) for k in VIEW_SETS["d4"]]
    assert len({tuple(v.flatten().tolist()) for v in seen}) == 8
    for k, v in zip(VIEW_SETS["d4"], seen, strict=True):
        assert torch.equal(undo(v, k), x)
    assert set(VIEW_SETS["flips"]) < set(VIEW_SETS["d4"]) and VIEW_SETS["none"] == (0,)


def test_combine_averages_scores_and_turns_maps_back():
    views = VIEW_SETS["d4"]
    amap = torch.rand(3, 4, 4)
    probs = torch.rand(len(views) * 3, 2)
    # what a perfectly equivariant head gives: each view's map is the image's map in that view
    maps = torch.cat([dihedral(amap, k) for k in views])
    classes = torch.cat([dihedral(amap > 0.5, k).long() for k in views])
    score, p, m, c = combine(
        (probs[:, 0], probs, maps, classes),
        views,
        [OutputKind.IMAGE_SCORE, OutputKind.CLASS_PROBS, OutputKind.DEFECT_MAP, OutputKind.CLASS_MAP],
    )
    torch.testing.assert_close(p, probs.reshape(len(views), 3, 2).mean(0))
    torch.testing.assert_close(score, p[:, 0])
    torch.testing.assert_close(m, amap)  # turned back before averaging, so the map is the image's
    assert torch.equal(c, (amap > 0.5).long())
    assert expand(amap[:, None], (0,)) is not None and combine(probs, (0,), [OutputKind.CLASS_PROBS]) is probs


def test_combine_refuses_boxes():
    with pytest.raises(InputError, match="tta"):
        combine(torch.zeros(8, 3, 6), VIEW_SETS["d4"], [OutputKind.BOXES])


def test_unknown_view_set_and_quarter_turns_on_an_oblong_canvas_are_refused(tiny_labelled):
    from flawscope.types import Targets

    with pytest.raises(InputError, match="tta"):
        get_model_class("classifier")(tta="rot45")
    with pytest.raises(InputError, match="square canvas"):
        get_model_class("classifier")(canvas=(64, 96), tta="d4")
    # the canvas chosen from 64 x 192 images is oblong too: refused before any training
    model = get_model_class("classifier")(image_size=64, engine="torch", tta="d4", **TRAINED)
    wide = [np.tile(image, (1, 3))[:, :192] for image in tiny_labelled["images"]]
    with pytest.raises(InputError, match="square canvas"):
        model.fit(wide, Targets(tiny_labelled["classes"]))
    assert not model.is_fitted


@pytest.fixture(scope="module")
def station(tiny_labelled):
    """A segmenter with a PaDiM head (every output kind but boxes), fitted with and without views."""
    from flawscope.types import Targets

    targets = Targets(tiny_labelled["classes"], tiny_labelled["masks"])
    params = {**SQUARE, **TRAINED, "anomaly": "padim"}
    plain = get_model_class("segmenter")(**params).fit(tiny_labelled["images"], targets)
    viewed = get_model_class("segmenter")(**params, tta="d4").fit(tiny_labelled["images"], targets)
    return plain, viewed


def _batch(model, images):
    from flawscope.data.preprocess import to_batch

    return to_batch(images, model.preprocessing_)[0]


def test_fitting_ignores_the_views_and_prediction_averages_them(station, tiny_labelled):
    plain, viewed = station
    state = {k: v for k, v in plain.state_tensors().items()}
    for name, value in viewed.state_tensors().items():
        torch.testing.assert_close(value, state[name])  # same data, same seed: the same model
    batch = _batch(plain, [*tiny_labelled["good_test"], *tiny_labelled["bad"]])
    got = viewed.raw_outputs(batch)
    per_view = [
        plain.raw_outputs(dihedral(torch.from_numpy(batch), k).contiguous().numpy()) for k in range(8)
    ]
    np.testing.assert_allclose(
        got["class_probs"], np.mean([v["class_probs"] for v in per_view], 0), atol=1e-5
    )
    np.testing.assert_allclose(
        got["defect_score"], np.mean([v["defect_score"] for v in per_view], 0), atol=1e-5
    )
    for name in ("defect_map", "patch_scores"):
        back = [undo(torch.from_numpy(v[name]), k).numpy() for k, v in enumerate(per_view)]
        np.testing.assert_allclose(got[name], np.mean(back, 0), atol=1e-4)
    np.testing.assert_array_equal(got["class_map"], per_view[0]["class_map"])
    # and the averaged outputs differ from the single view's (the views are really scored)
    assert np.abs(got["defect_score"] - per_view[0]["defect_score"]).max() > 1e-4


def test_averaged_outputs_do_not_change_when_the_part_is_turned(station, tiny_labelled):
    plain, viewed = station
    batch = torch.from_numpy(_batch(viewed, tiny_labelled["bad"]))
    base = viewed.raw_outputs(batch.numpy())
    spread = []
    for k in (4, 5, 3):  # a transpose, a quarter turn, a half turn
        turned = viewed.raw_outputs(dihedral(batch, k).contiguous().numpy())
        np.testing.assert_allclose(turned["class_probs"], base["class_probs"], atol=1e-5)
        np.testing.assert_allclose(
            undo(torch.from_numpy(turned["defect_map"]), k).numpy(), base["defect_map"], atol=1e-5
        )
        single = plain.raw_outputs(dihedral(batch, k).contiguous().numpy())
        spread.append(np.abs(single["class_probs"] - plain.raw_outputs(batch.numpy())["class_probs"]).max())
    assert max(spread) > 1e-4  # a single view does change: the invariance comes from the views


def test_exported_graph_holds_the_views(station, tiny_labelled, tmp_path):
    from flawscope.decide.verdict import decide_many
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.io import load_model, save_model
    from flawscope.runtime import Inspector

    _, viewed = station
    save_model(viewed, tmp_path / "bundle")
    loaded, bundle = load_model(tmp_path / "bundle")
    assert bundle.manifest.model.hyperparameters["tta"] == "d4" and loaded.views() == viewed.views()
    export_bundle(tmp_path / "bundle", tmp_path / "deploy")
    inspector = Inspector.load(tmp_path / "deploy")
    images = [*tiny_labelled["good_test"], *tiny_labelled["bad"]]
    batch = _batch(viewed, images)
    got, want = inspector._run(batch), viewed.raw_outputs(batch)
    for spec in viewed.declaration().outputs:
        if spec.kind is OutputKind.CLASS_MAP:
            assert (got[spec.name] != want[spec.name]).mean() < 0.01
        else:
            np.testing.assert_allclose(got[spec.name], want[spec.name], atol=1e-3)
    assert inspector.declaration == viewed.declaration()
    ours, theirs = viewed.predict(images), inspector.score_many(images)
    np.testing.assert_allclose(theirs.scores, ours.scores, atol=1e-3)
    from flawscope.decide.thresholds import Thresholds

    thresholds = Thresholds.explicit(float(np.quantile(ours.scores, 0.75)), float(np.median(ours.scores)))
    same = [(v.outcome, v.category) for v in decide_many(ours, thresholds)]
    assert [(v.outcome, v.category) for v in decide_many(theirs, thresholds)] == same
    assert len({outcome for outcome, _ in same}) >= 2  # the thresholds do separate the parts


def test_int8_graph_holds_the_views_too(station, tiny_labelled, tmp_path):
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.io import save_model
    from flawscope.runtime import Inspector

    _, viewed = station
    save_model(viewed, tmp_path / "bundle")
    good = tiny_labelled["good"]
    export_bundle(
        tmp_path / "bundle", tmp_path / "deploy", int8=True, calibration_images=good, refit_images=good
    )
    int8, fp32 = Inspector.load(tmp_path / "deploy", int8=True), Inspector.load(tmp_path / "deploy")
    batch = torch.from_numpy(_batch(viewed, tiny_labelled["bad"]))
    got = int8._run(batch.numpy())
    turned = int8._run(dihedral(batch, 5).contiguous().numpy())  # a quarter turn of every part
    np.testing.assert_allclose(turned["class_probs"], got["class_probs"], atol=1e-4)
    np.testing.assert_allclose(
        undo(torch.from_numpy(turned["defect_map"]), 5).numpy(), got["defect_map"], atol=1e-4
    )
    want = fp32._run(batch.numpy())
    assert got["class_probs"].shape == want["class_probs"].shape  # one row per part, not per view
    np.testing.assert_allclose(got["class_probs"], want["class_probs"], atol=0.2)

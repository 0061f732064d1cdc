"""Every registered model trains and scores in tiles; the torch-free runtime gives the same maps."""

from __future__ import annotations

import numpy as np
import pytest

from flawscope.data.large_parts import LargePartSpec, write_large_parts

TILE = {"tile": 64, "overlap": 0.25, "batch_size": 8, "engine": "torch"}


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    from flawscope.data.datasets import load_dataset, read_samples

    spec = LargePartSpec(
        size=(128, 192),
        defect_px=(8, 12),
        n_train=12,
        n_test_good=10,
        n_test_defect=4,
        contrast=(70, 90),
        seed=3,
    )
    root = write_large_parts(tmp_path_factory.mktemp("large") / "data", spec)
    test = read_samples(load_dataset(root).test)
    return root, test


def _models():
    from flawscope.models import MODELS

    return sorted(name for name, cls in MODELS.items() if cls.tiles)


def test_models_that_cannot_tile_refuse_a_tile_size_by_name():
    from flawscope.errors import InputError
    from flawscope.models import MODELS

    assert {"padim", "patchcore"} <= set(_models())
    for cls in MODELS.values():
        if not cls.tiles:
            with pytest.raises(InputError, match="tile"):
                cls(tile=64)


@pytest.mark.parametrize("name", _models())
def test_tiled_model_trains_exports_and_the_runtime_matches(name, large, tmp_path):
    import torch

    from flawscope.bundle import read_bundle
    from flawscope.decide.workflow import calibrate_bundle
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.io import load_model
    from flawscope.models.train import train
    from flawscope.runtime import Inspector

    torch.set_num_threads(2)
    root, test = large
    train(root, tmp_path / "trained", model=name, params=TILE)
    pre = read_bundle(tmp_path / "trained").manifest.preprocessing
    assert (pre.tile, pre.overlap, pre.height, pre.width) == (64, 0.25, 64, 64)  # saved with the model
    good = [im for im, s in zip(test.images, test.samples, strict=True) if s.label == 0]
    calibrate_bundle(tmp_path / "trained", good, target_frr=0.1)
    export_bundle(tmp_path / "trained", tmp_path / "deployed")
    model, _ = load_model(tmp_path / "trained")
    reference = model.predict(test.images)
    for image, amap in zip(test.images, reference.maps, strict=True):
        assert amap.shape == image.shape[:2] and np.isfinite(amap).all()
    inspector = Inspector.load(tmp_path / "deployed", threads=2)
    got = inspector.score_many(test.images)
    np.testing.assert_allclose(got.scores, reference.scores, rtol=1e-3)
    for g, r in zip(got.maps, reference.maps, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-3 * float(np.abs(r).max()))
    # The defects are found at their own resolution: every defective part above every good one.
    labels = np.array([s.label for s in test.samples])
    assert reference.scores[labels == 1].min() > reference.scores[labels == 0].max()
    # A part smaller than a tile is not inspected: an error verdict naming the tile, never a pass.
    verdicts = inspector.inspect_many([test.images[0], test.images[0][:40, :40]])
    assert verdicts[0].outcome.value != "error"
    assert verdicts[1].outcome.value == "error" and "tile" in (verdicts[1].reason or "")


def test_a_magnified_tiled_model_saves_its_scale_and_the_runtime_matches(large, tmp_path):
    import torch

    from flawscope.bundle import read_bundle
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.io import load_model
    from flawscope.models.train import train
    from flawscope.runtime import Inspector

    torch.set_num_threads(2)
    root, test = large
    train(root, tmp_path / "trained", model="padim", params={**TILE, "tile_scale": 2.0})
    assert read_bundle(tmp_path / "trained").manifest.preprocessing.tile_scale == 2.0
    export_bundle(tmp_path / "trained", tmp_path / "deployed")
    model, _ = load_model(tmp_path / "trained")
    reference = model.predict(test.images)
    got = Inspector.load(tmp_path / "deployed", threads=2).score_many(test.images)
    np.testing.assert_allclose(got.scores, reference.scores, rtol=1e-3)
    for image, g, r in zip(test.images, got.maps, reference.maps, strict=True):
        assert r.shape == image.shape[:2]
        np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-3 * float(np.abs(r).max()))
    labels = np.array([s.label for s in test.samples])
    assert reference.scores[labels == 1].min() > reference.scores[labels == 0].max()

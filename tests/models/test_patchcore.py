"""PatchCore's search: the one-MatMul form is the textbook distance; the projected form bounds it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flawscope.data.preprocess import canvas_valid_mask, to_batch
from flawscope.models.patchcore import NearestNeighbourHead, PatchCore, principal_axes


def _setup(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    scale = np.r_[np.full(4, 3.0), np.full(8, 0.2)]  # four dominant axes
    bank = rng.normal(size=(300, 12)) * scale
    features = rng.normal(size=(2, 12, 4, 5)) * scale[None, :, None, None]
    return torch.from_numpy(bank.astype(np.float32)), torch.from_numpy(features.astype(np.float32))


def _exact(bank: torch.Tensor, features: torch.Tensor) -> np.ndarray:
    b, c, h, w = features.shape
    queries = features.double().permute(0, 2, 3, 1).reshape(-1, c)
    return torch.cdist(queries, bank.double()).min(1).values.reshape(b, h, w).numpy()


def test_search_equals_textbook_nearest_neighbour_distance():
    bank, features = _setup()
    scorer = NearestNeighbourHead(bank)
    np.testing.assert_allclose(scorer(features).numpy(), _exact(bank, features), rtol=1e-4, atol=1e-4)


def test_projection_onto_all_axes_is_exact_and_onto_fewer_never_overestimates():
    bank, features = _setup(1)
    exact = _exact(bank, features)
    full = NearestNeighbourHead(bank, *principal_axes(bank, 12))
    np.testing.assert_allclose(full(features).numpy(), exact, rtol=1e-4, atol=1e-4)
    few = NearestNeighbourHead(bank, *principal_axes(bank, 4))
    approx = few(features).numpy()
    assert np.all(approx <= exact + 1e-4)  # an orthogonal projection only shortens distances
    assert np.corrcoef(approx.ravel(), exact.ravel())[0, 1] > 0.9  # the dominant axes carry the ranking


def test_search_dims_survive_a_save_load_round_trip(tiny_parts, tmp_path):
    from flawscope.models.io import load_model, save_model

    model = PatchCore(image_size=64, batch_size=4, engine="torch", search="exact", search_dims=16).fit(
        tiny_parts["train"][:6]
    )
    assert model.search_axes_ is not None and model.search_axes_[1].shape[1] == 16
    save_model(model, tmp_path / "b")
    loaded, _ = load_model(tmp_path / "b")
    images = tiny_parts["bad"][:3]
    np.testing.assert_allclose(loaded.predict(images).scores, model.predict(images).scores, rtol=1e-5)


SMALL = {"image_size": 64, "batch_size": 4, "engine": "torch"}


def test_bank_is_a_tenth_of_the_training_patches_and_searched_through_ivf(tiny_parts):
    model = PatchCore(**SMALL).fit(tiny_parts["train"])
    assert model.preprocessing_ is not None
    _, geometries = to_batch(tiny_parts["train"], model.preprocessing_)
    n_patches = int(canvas_valid_mask(geometries, model.preprocessing_, 8).sum())
    assert len(model.memory_bank_) == round(0.1 * n_patches)
    index = model.host_search()
    assert index is not None and len(index.arrays.centroids) >= 1
    # Every list scanned: the IVF search is the exact search of the torch head.
    exact = PatchCore(**SMALL, nprobe=10_000).fit(tiny_parts["train"])
    images = tiny_parts["bad"][:3]
    assert exact.preprocessing_ is not None
    batch, _ = to_batch(images, exact.preprocessing_)
    with torch.inference_mode():
        reference = exact.head()(exact._runner()(batch)).numpy()
    np.testing.assert_allclose(exact.raw_outputs(batch)["patch_scores"], reference, rtol=1e-4, atol=1e-4)


def test_ivf_state_survives_a_save_load_round_trip(tiny_parts, tmp_path):
    from flawscope.models.io import load_model, save_model

    model = PatchCore(**SMALL, nprobe=1).fit(tiny_parts["train"])
    save_model(model, tmp_path / "b")
    loaded, _ = load_model(tmp_path / "b")
    assert loaded.host_search() is not None
    images = [*tiny_parts["good"], *tiny_parts["bad"]]
    np.testing.assert_array_equal(loaded.predict(images).scores, model.predict(images).scores)


def test_a_bank_too_large_for_the_machine_is_refused_at_fit_time_with_the_estimate(tiny_parts, monkeypatch):
    import flawscope.models.patchcore as patchcore
    from flawscope.errors import InputError

    monkeypatch.setattr(patchcore, "available_memory", lambda: 1_000_000)  # 1 MB free
    with pytest.raises(InputError, match=r"max_candidates.*GiB to fit .* available"):
        PatchCore(**SMALL).fit(tiny_parts["train"])


def test_search_settings_are_checked():
    from flawscope.errors import InputError

    for params, field in (
        ({"search": "hnsw"}, "search"),
        ({"nprobe": 0}, "nprobe"),
        ({"nlist": 1.5}, "nlist"),
        ({"search_dims": 8}, "search_dims"),  # IVF searches every channel
        ({"max_bank": 0}, "max_bank"),
        ({"pooling": "max"}, "pooling"),
    ):
        with pytest.raises(InputError, match=field):
            PatchCore(**params)


def test_per_level_pooling_averages_each_level_on_its_own_grid_before_upsampling():
    import torch.nn.functional as F

    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    embedder = PatchCore(**SMALL)._embedder()
    with torch.inference_mode():
        f8, f16 = embedder.backbone(x)

        def pool(f: torch.Tensor) -> torch.Tensor:
            return F.avg_pool2d(f, 3, stride=1, padding=1, count_include_pad=False)

        up = F.interpolate(pool(f16), size=f8.shape[-2:], mode="bilinear", align_corners=False)
        expected = torch.cat([pool(f8), up], 1)
        np.testing.assert_allclose(embedder(x).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
        fused = PatchCore(**SMALL, pooling="fused")._embedder()(x)
    # The stride-16 level's neighbourhood is twice as wide per level, so the two differ there.
    assert float((fused[:, -f16.shape[1] :] - expected[:, -f16.shape[1] :]).abs().max()) > 1e-2


def test_bundles_saved_before_the_pooling_choice_keep_the_fused_pooling(tiny_parts, tmp_path):
    from flawscope.models.io import load_model, save_model

    assert PatchCore.saved_params({"search": "ivf"})["pooling"] == "fused"
    assert PatchCore.saved_params({"pooling": "per_level"})["pooling"] == "per_level"
    model = PatchCore(**SMALL, pooling="fused").fit(tiny_parts["train"][:6])
    save_model(model, tmp_path / "b")
    loaded, _ = load_model(tmp_path / "b")
    assert loaded.params["pooling"] == "fused"
    images = tiny_parts["bad"][:3]
    np.testing.assert_array_equal(loaded.predict(images).scores, model.predict(images).scores)

"""Tiling: tiles cover the image on the stride grid, stitch without seams, batch across images."""

from __future__ import annotations

import numpy as np
import pytest

from flawscope.data.preprocess import Preprocessing
from flawscope.data.tiling import STRIDE, _padded, finish_tiled, layout, score_tiled, tile_batches
from flawscope.errors import InputError


def _pre(tile: int = 64, overlap: float = 0.25) -> Preprocessing:
    return Preprocessing(tile, tile, "stretch", tile=tile, overlap=overlap)


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)


def _pooled_channel(batch: np.ndarray) -> np.ndarray:
    """A stand-in network: each stride-8 cell's mean of the first input channel (position-free)."""
    b, _, h, w = batch.shape
    return batch[:, 0].reshape(b, h // STRIDE, STRIDE, w // STRIDE, STRIDE).mean(axis=(2, 4))


def test_tiles_cover_the_padded_image_on_the_stride_grid():
    pre = _pre(64, 0.5)
    lay = layout((200, 333), pre)
    assert (lay.padded_height, lay.padded_width) == (224, 352)
    covered = np.zeros((lay.padded_height, lay.padded_width), bool)
    for top, left in lay.origins:
        assert top % STRIDE == 0 and left % STRIDE == 0
        assert top + 64 <= lay.padded_height and left + 64 <= lay.padded_width
        covered[top : top + 64, left : left + 64] = True
    assert covered.all()
    tops = sorted({t for t, _ in lay.origins})
    assert tops[1] - tops[0] == 32  # 50% overlap of a 64 px tile


def test_stitched_map_has_no_seams_and_every_cell_in_its_place():
    # A network whose cell values do not depend on which tile computed them must give, after
    # stitching, exactly what it gives on the whole image at once: any seam or misplaced tile
    # would show as a difference.
    pre = _pre(64, 0.25)
    images = [_image(150, 230, 1), _image(96, 96, 2)]
    scores, maps = score_tiled(images, pre, _pooled_channel, batch=5)
    for image, amap, score in zip(images, maps, scores, strict=True):
        assert amap.shape == image.shape and np.isfinite(amap).all()
        lay = layout(image.shape, pre)
        padded = _padded(image, lay)
        canvas = ((padded.astype(np.float32) / 255.0) - pre.mean[0]) / pre.std[0]
        grid = _pooled_channel(canvas[None, None])[0]
        expected_score, expected = finish_tiled(grid, lay, pre)
        np.testing.assert_allclose(amap, expected, rtol=1e-5, atol=1e-5)
        assert score == pytest.approx(expected_score, rel=1e-5)


def test_batching_across_images_changes_nothing():
    pre = _pre(64, 0.3)
    images = [_image(100, 140, 3), _image(64, 200, 4), _image(130, 70, 5)]
    first = list(tile_batches(images, pre, batch=7))
    assert {i for _, where in first for i, _, _ in where} == {0, 1, 2}
    assert any(len({i for i, _, _ in where}) > 1 for _, where in first)  # one call holds tiles of two images
    a_scores, a_maps = score_tiled(images, pre, _pooled_channel, batch=1)
    b_scores, b_maps = score_tiled(images, pre, _pooled_channel, batch=7)
    np.testing.assert_array_equal(a_scores, b_scores)
    for a, b in zip(a_maps, b_maps, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_tiling_is_refused_naming_the_field():
    with pytest.raises(InputError, match=r"tile.*larger than the 60x40 px image"):
        layout((40, 60), _pre(64))
    for overlap in (1.0, 1.5, -0.1):
        with pytest.raises(InputError, match="overlap"):
            _pre(64, overlap)
    with pytest.raises(InputError, match=r"tile.*multiple of 32"):
        Preprocessing(128, 128, tile=100)
    with pytest.raises(InputError, match="tile"):
        Preprocessing(256, 256, tile=64)  # the canvas of a tiled model is one tile


def test_an_image_too_large_for_memory_is_refused_up_front_with_its_size(monkeypatch):
    import flawscope.data.tiling as tiling

    monkeypatch.setattr(tiling, "available_memory", lambda: 100_000)
    calls = []
    with pytest.raises(InputError, match=r"200x100 px .* GiB .* available"):
        score_tiled([_image(100, 200)], _pre(64), lambda b: calls.append(b) or _pooled_channel(b), batch=4)
    assert not calls  # refused before any tile ran


def test_tiling_survives_the_manifest_round_trip():
    pre = _pre(96, 0.4)
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    old = {k: v for k, v in pre.to_dict().items() if k not in ("tile", "overlap")}
    old.update(height=256, width=256)
    assert Preprocessing.from_dict(old).tile == 0  # bundles from before tiling read as untiled


def test_a_tile_scale_magnifies_the_image_and_maps_come_back_at_its_size():
    pre = Preprocessing(64, 64, "stretch", tile=64, overlap=0.25, tile_scale=2.0)
    native = _pre(64, 0.25)
    image = _image(100, 150, 6)
    lay = layout(image.shape, pre)
    assert (lay.height, lay.width, lay.source_height, lay.source_width) == (200, 300, 100, 150)
    assert len(lay.origins) > 3 * len(layout(image.shape, native).origins)  # about 4x the tiles
    # An image smaller than a tile can be tiled once magnified; the message names the scale.
    assert layout((40, 60), pre).height == 80
    with pytest.raises(InputError, match=r"60x40 px image \(resized by the tile scale 0.5"):
        layout((40, 60), Preprocessing(32, 32, "stretch", tile=32, tile_scale=0.5))
    # Position-free stand-in network: magnified, tiled and stitched gives the map of the whole
    # magnified image, brought back to the image's own size.
    scores, maps = score_tiled([image], pre, _pooled_channel, batch=6)
    assert maps[0].shape == image.shape and np.isfinite(maps[0]).all()
    padded = _padded(image, lay)
    assert padded.shape == (lay.padded_height, lay.padded_width)
    canvas = ((padded.astype(np.float32) / 255.0) - pre.mean[0]) / pre.std[0]
    expected_score, expected = finish_tiled(_pooled_channel(canvas[None, None])[0], lay, pre)
    assert expected.shape == image.shape
    np.testing.assert_allclose(maps[0], expected, rtol=1e-5, atol=1e-5)
    assert scores[0] == pytest.approx(expected_score, rel=1e-5)
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    assert (
        Preprocessing.from_dict({k: v for k, v in pre.to_dict().items() if k != "tile_scale"}).tile_scale
        == 1.0
    )
    for bad in (0, -1.0, 5.0, True, "2"):
        with pytest.raises(InputError, match="tile_scale"):
            Preprocessing(64, 64, "stretch", tile=64, tile_scale=bad)  # type: ignore[arg-type]

from __future__ import annotations

import cv2
import numpy as np
import pytest

from flawscope.data.preprocess import (
    Geometry,
    Preprocessing,
    canvas_valid_mask,
    check_image,
    choose_canvas,
    finish_map,
    to_batch,
    to_canvas,
)
from flawscope.errors import InputError

H, W = 120, 300  # a long part, wider than tall
CENTRE, RADIUS = (150, 60), 40


def _disk_image() -> np.ndarray:
    image = np.zeros((H, W), np.uint8)
    cv2.circle(image, CENTRE, RADIUS, 255, -1)
    return image


def _extent(mask: np.ndarray) -> tuple[int, int]:
    """(width, height) of the True pixels' bounding box."""
    ys, xs = np.nonzero(mask)
    return int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def _inner(channel: np.ndarray, g: Geometry) -> np.ndarray:
    return channel[g.top : g.top + g.inner_height, g.left : g.left + g.inner_width]


def _canvas_disk(mode: str) -> tuple[np.ndarray, Geometry, Preprocessing]:
    config = Preprocessing(256, 256, mode)
    tensor, geometry = to_canvas(_disk_image(), config)
    channel = tensor[0]
    return (channel - channel.min()) / (channel.max() - channel.min()), geometry, config


def test_fit_pad_keeps_a_circle_round_in_the_canvas() -> None:
    fit, g, _ = _canvas_disk("fit_pad")
    assert (g.inner_height, g.inner_width) == (102, 256)  # 120x300 scaled by 256/300
    width, height = _extent(_inner(fit, g) > 0.5)
    assert abs(width - height) <= 2
    assert abs(width - 2 * RADIUS * 256 / 300) <= 2
    stretched, g, _ = _canvas_disk("stretch")
    width, height = _extent(_inner(stretched, g) > 0.5)
    assert height > 2 * width  # stretching squashes it into an ellipse: the check above can fail


@pytest.mark.parametrize("mode", ["fit_pad", "stretch"])
@pytest.mark.parametrize("stride", [1, 8])
def test_map_round_trip_returns_the_circle_at_original_size(mode: str, stride: int) -> None:
    canvas, geometry, config = _canvas_disk(mode)
    patch_map = cv2.resize(canvas, (256 // stride, 256 // stride), interpolation=cv2.INTER_AREA)
    score, full = finish_map(patch_map, geometry, config)
    assert full.shape == (H, W) and full.dtype == np.float32
    assert score == pytest.approx(float(full.max()), abs=0.02)
    found = full > 0.5 * full.max()
    width, height = _extent(found)
    assert abs(width - height) <= 2
    assert abs(width - 2 * RADIUS) <= 4
    ys, xs = np.nonzero(found)
    assert abs(xs.mean() - CENTRE[0]) < 1.0 and abs(ys.mean() - CENTRE[1]) < 1.0
    truth = _disk_image() > 0
    assert (found & truth).sum() / (found | truth).sum() > 0.9


def test_fit_pad_mirrors_into_the_padding_and_stretch_fills_the_canvas() -> None:
    ramp = np.tile(np.linspace(0, 255, W).astype(np.uint8), (H, 1))
    config = Preprocessing(256, 256, "stretch")
    tensor, g = to_canvas(ramp, config)
    assert (g.top, g.left, g.inner_height, g.inner_width) == (0, 0, 256, 256)
    assert tensor.shape == (3, 256, 256) and tensor.dtype == np.float32
    # The ramp runs edge to edge: nothing but image in the canvas.
    assert tensor[0, :, 0].max() < tensor[0, :, 128].min() < tensor[0, :, -1].min()
    fit, g = to_canvas(ramp, Preprocessing(256, 256, "fit_pad"))
    assert g.top > 0 and g.inner_height < 256
    # Rows above the image mirror it: the same ramp, not a constant fill.
    assert np.allclose(fit[:, 0], fit[:, g.top + 2], atol=0.05)


def test_normalisation_uses_mean_and_std() -> None:
    grey = np.full((32, 32), 255, np.uint8)
    tensor, _ = to_canvas(grey, Preprocessing(32, 32))
    expected = (1.0 - np.float32(Preprocessing().mean)) / np.float32(Preprocessing().std)
    assert np.allclose(tensor[:, 5, 5], expected, atol=1e-5)
    assert np.allclose(to_canvas(np.full((32, 32), 65535, np.uint16), Preprocessing(32, 32))[0], tensor)


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ([], (256, 256)),
        ([(100, 300)] * 3 + [(300, 300)], (256, 768)),  # median aspect 1:3, not the mean
        ([(1250, 500), (1270, 500), (1235, 500)], (640, 256)),  # tall commutators
        ([(100, 1000)], (256, 1024)),  # capped at 4:1
        ([(250, 260), (240, 250)], (256, 256)),
    ],
)
def test_choose_canvas_follows_the_median_aspect(
    sizes: list[tuple[int, int]], expected: tuple[int, int]
) -> None:
    canvas = choose_canvas(sizes)
    assert canvas == expected
    assert all(side % 32 == 0 for side in canvas)


@pytest.mark.parametrize("shape", [(123, 457), (457, 123, 3), (64, 64)])
@pytest.mark.parametrize("mode", ["fit_pad", "stretch"])
def test_finish_map_returns_the_original_size(shape: tuple[int, ...], mode: str) -> None:
    config = Preprocessing(*choose_canvas([shape[:2]]), mode=mode)
    image = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    batch, geometries = to_batch([image, image], config)
    assert batch.shape == (2, 3, config.height, config.width)
    score, full = finish_map(
        np.ones((config.height // 8, config.width // 8), np.float32), geometries[0], config
    )
    assert full.shape == shape[:2] and full.dtype == np.float32
    assert score == pytest.approx(1.0) and np.allclose(full, 1.0)


def test_canvas_valid_mask_marks_cells_inside_the_image() -> None:
    config = Preprocessing(256, 256)
    _, g = to_canvas(_disk_image(), config)
    valid = canvas_valid_mask([g], config, stride=8)[0]
    assert valid.shape == (32, 32)
    rows = np.nonzero(valid.any(axis=1))[0]
    assert valid.all(axis=1)[rows].all()  # full width used
    assert abs(len(rows) * 8 - g.inner_height) <= 8


def test_config_and_image_validation() -> None:
    config = Preprocessing(320, 256, "stretch")
    assert Preprocessing.from_dict(config.to_dict()) == config
    with pytest.raises(InputError, match=r"preprocessing\.mode"):
        Preprocessing(mode="crop")
    with pytest.raises(InputError, match=r"preprocessing\.width"):
        Preprocessing(width=100)
    with pytest.raises(InputError, match="numpy array"):
        check_image([[1, 2], [3, 4]])
    with pytest.raises(InputError, match="shape"):
        check_image(np.zeros((32, 32, 5), np.uint8))
    # Alpha is dropped, as when the image is read from a file.
    rgba = np.random.default_rng(0).integers(0, 256, (32, 32, 4), dtype=np.uint8)
    np.testing.assert_array_equal(check_image(rgba), rgba[:, :, :3])
    np.testing.assert_array_equal(check_image(rgba[:, :, :2]), rgba[:, :, 0])
    with pytest.raises(InputError, match="at least 16x16"):
        check_image(np.zeros((8, 32), np.uint8))
    with pytest.raises(InputError, match="not supported"):
        check_image(np.zeros((32, 32), np.int64))
    with pytest.raises(InputError, match="NaN"):
        check_image(np.full((32, 32), np.nan, np.float32))


@pytest.mark.parametrize(
    ("canvas", "geometry"),
    [
        ((256, 256), Geometry(256, 256, 0, 0, 256, 256)),
        ((288, 256), Geometry(400, 410, 20, 0, 250, 256)),
        ((256, 640), Geometry(500, 1250, 0, 37, 256, 566)),
        ((64, 64), Geometry(90, 111, 5, 3, 50, 61)),
    ],
)
def test_finish_map_is_resize_then_blur_of_the_whole_canvas(canvas, geometry) -> None:
    """The matrix form gives what resizing and blurring the whole canvas gives (the textbook way)."""
    from flawscope.data.preprocess import MAP_SIGMA

    height, width = canvas
    config = Preprocessing(height, width, "fit_pad", (0.5,) * 3, (0.2,) * 3)
    grid = np.random.default_rng(0).gamma(3.0, 5.0, (height // 8, width // 8)).astype(np.float32)
    whole = cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR)
    whole = cv2.GaussianBlur(whole, (0, 0), sigmaX=MAP_SIGMA, sigmaY=MAP_SIGMA, borderType=cv2.BORDER_REFLECT)
    inner = whole[
        geometry.top : geometry.top + geometry.inner_height,
        geometry.left : geometry.left + geometry.inner_width,
    ]
    expected = cv2.resize(inner, (geometry.width, geometry.height), interpolation=cv2.INTER_LINEAR)
    score, full = finish_map(grid, geometry, config)
    assert score == pytest.approx(float(inner.max()), rel=1e-6)
    np.testing.assert_allclose(full, expected, rtol=0, atol=1e-6 * float(expected.max()))

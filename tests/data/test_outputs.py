"""Finishing named graph outputs: a defect map can be the decision (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest

from flawscope.data.outputs import class_map_to_image, finish_outputs
from flawscope.data.preprocess import Preprocessing, geometry_of
from flawscope.declaration import LabelKind, ModelDeclaration, OutputKind, OutputSpec, Task

OUTPUTS = (
    OutputSpec("defect_score", OutputKind.IMAGE_SCORE),
    OutputSpec("class_probs", OutputKind.CLASS_PROBS),
    OutputSpec("defect_map", OutputKind.DEFECT_MAP, 8),
)


def _raw() -> dict[str, np.ndarray]:
    grid = np.zeros((2, 8, 8), np.float32)
    grid[0, 3, 3] = 0.9  # a one-cell spot
    grid[1, 2:5, 2:6] = 0.6  # a wider, fainter defect
    return {
        "defect_score": np.array([0.2, 0.3], np.float32),
        "class_probs": np.array([[0.8, 0.2], [0.7, 0.3]], np.float32),
        "defect_map": grid,
    }


def _declaration(decision: str) -> ModelDeclaration:
    return ModelDeclaration(
        Task.SEGMENT, (LabelKind.IMAGE, LabelKind.MASK), OUTPUTS, ("good", "crack"), decision
    )


@pytest.mark.parametrize("area", [0, 200])
def test_a_defect_map_decision_scores_the_map_inside_the_image(area):
    pre = Preprocessing(64, 64, score_area=area)
    geometries = [geometry_of((48, 64), pre)] * 2
    by_map = finish_outputs(_raw(), geometries, pre, _declaration("defect_map"))
    by_score = finish_outputs(_raw(), geometries, pre, _declaration("defect_score"))
    np.testing.assert_array_equal(by_score.scores, np.float32([0.2, 0.3]))
    # The image fills the canvas's width at its own size, so its map is the canvas map inside it.
    for score, amap in zip(by_map.scores, by_map.maps, strict=True):
        top = np.sort(amap.ravel())[::-1][: max(area, 1)]
        assert score == pytest.approx(top.mean(), rel=1e-5)
    if area:
        assert by_map.scores[1] > by_map.scores[0]  # over 200 pixels the wider defect wins


def test_class_map_lookup_is_nearest_cell():
    pre = Preprocessing(64, 64)
    grid = np.arange(64, dtype=np.int64).reshape(8, 8)
    full = class_map_to_image(grid, geometry_of((128, 128), pre), pre)
    assert full.shape == (128, 128) and full.dtype == np.int32
    assert full[0, 0] == 0 and full[0, 127] == 7 and full[127, 0] == 56 and full[16, 16] == 9


def test_boxes_are_finished_in_the_image_s_pixels():
    from flawscope.data.outputs import finish_boxes
    from flawscope.data.preprocess import Geometry

    # a 100 x 200 (h x w) image fitted into a 128 x 128 canvas: scale 0.64, 32 px of padding above
    geometry = Geometry(100, 200, 32, 0, 64, 128)
    raw = np.array(
        [
            [0.0, 32.0, 64.0, 64.0, 0.9, 2.0],  # the left half of the image's top half
            [100.0, 80.0, 140.0, 120.0, 0.5, 1.0],  # reaches past the image: clipped
            [10.0, 40.0, 20.0, 50.0, 0.005, 1.0],  # below the confidence kept
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # an empty row
        ],
        np.float32,
    )
    boxes = finish_boxes(raw, geometry, ("good", "crack", "dent"))
    assert [b[5] for b in boxes] == ["dent", "crack"]
    np.testing.assert_allclose(boxes[0][:5], (0.0, 0.0, 100.0, 50.0, 0.9), rtol=1e-6)
    np.testing.assert_allclose(boxes[1][:4], (156.25, 75.0, 200.0, 100.0), rtol=1e-6)


def test_a_fused_score_adds_the_peaks_of_its_maps_inside_the_image_only():
    # A 64 x 32 image on a 64 x 64 canvas: columns 16-47 are the image, the rest mirrored padding.
    pre = Preprocessing(64, 64)
    geometry = geometry_of((64, 32), pre)
    fusion = np.zeros((1, 2, 8, 8), np.float32)
    fusion[0, 0, 4, 3] = 2.0  # inside the image (cell centre at x = 28)
    fusion[0, 1, 5, 4] = 1.5
    raw = {
        "defect_score": np.array([0.25], np.float32),
        "class_probs": np.array([[0.6, 0.4]], np.float32),
        "defect_map": np.zeros((1, 8, 8), np.float32),
        "fusion_maps": fusion.copy(),
    }
    declaration = ModelDeclaration(
        Task.SEGMENT, (LabelKind.IMAGE,), (*OUTPUTS, OutputSpec("fusion_maps", OutputKind.FUSION_MAPS, 8)),
        ("good", "scratch"), "defect_score",
    )  # fmt: skip
    score = finish_outputs(raw, [geometry], pre, declaration).scores
    np.testing.assert_allclose(score, [0.25 + 2.0 + 1.5])
    raw["fusion_maps"][0, :, :, 0] = 50.0  # a peak in the left padding (cell centre at x = 4) ...
    raw["fusion_maps"][0, 1, :, 7] = 80.0  # ... and in the right one
    np.testing.assert_allclose(finish_outputs(raw, [geometry], pre, declaration).scores, score)
    raw["fusion_maps"][0, 1, 0, 2] = 3.0  # inside again: it counts
    np.testing.assert_allclose(finish_outputs(raw, [geometry], pre, declaration).scores, [0.25 + 2.0 + 3.0])


def test_inner_cells_leave_out_the_seam_with_the_padding_not_the_canvas_edge():
    from flawscope.data.preprocess import inner_cells

    valid = np.zeros((2, 6, 8), bool)
    valid[0, :, 2:6] = True  # an upright image between two padded bands
    inner = inner_cells(valid, 1)
    assert inner[0, :, 3:5].all() and not inner[0, :, 2].any() and not inner[0, :, 5].any()
    assert inner[0, 0, 3] and inner[0, 5, 4]  # the canvas's top and bottom rows are no seam
    assert inner[1].all()  # no cell inside: the whole canvas
    thin = np.zeros((1, 6, 8), bool)
    thin[0, :, 3] = True  # one column: nothing is a cell away from the padding, so all of it stays
    np.testing.assert_array_equal(inner_cells(thin, 1), thin)
    np.testing.assert_array_equal(inner_cells(valid[:1], 0), valid[:1])

"""A ``box_detector``'s verdict regions are its boxes: alike from torch, the runtime and a torch-free venv."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from tests.models.test_box_detector import fitted_on_scenes
from tests.runtime.test_torch_free import _run, torch_free_python  # noqa: F401  (the fixture)

THRESHOLDS = {"reject": 0.5, "region_level": 0.3, "mm_per_px": 0.1}


@dataclass(frozen=True)
class BoxBundle:
    """A fitted box detector, its deployable bundle and scenes it did not train on."""

    model: object
    path: Path
    images: list[np.ndarray]
    boxes: list[tuple]


@pytest.fixture(scope="module")
def box_bundle(tmp_path_factory: pytest.TempPathFactory) -> BoxBundle:
    from flawscope.decide.thresholds import ThresholdHistory, Thresholds
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.io import save_model

    fitted = fitted_on_scenes()
    model, test, test_boxes = fitted.model, fitted.test[:6], fitted.test_boxes[:6]
    folder = tmp_path_factory.mktemp("box_bundle")
    history = ThresholdHistory().add(Thresholds.explicit(THRESHOLDS["reject"], **{
        k: v for k, v in THRESHOLDS.items() if k != "reject"}))  # fmt: skip
    save_model(model, folder / "trained", thresholds=history)
    export_bundle(folder / "trained", folder / "deployed")
    return BoxBundle(model, folder / "deployed", test, test_boxes)


def _regions(verdict) -> list[tuple]:
    return [(r.bbox, r.category, round(r.peak, 3)) for r in verdict.regions]


def test_the_runtime_s_regions_are_the_models_boxes(box_bundle):
    from flawscope.decide.thresholds import Thresholds
    from flawscope.decide.verdict import decide_many
    from flawscope.runtime import Inspector

    inspector = Inspector.load(box_bundle.path, threads=1)
    got = inspector.inspect_many(box_bundle.images)
    # the deployed bundle carries the region level the detector learnt (here overridden by THRESHOLDS)
    assert inspector.score_many(box_bundle.images[:1]).box_level == box_bundle.model.box_level_ is not None
    prediction = box_bundle.model.predict(box_bundle.images)  # type: ignore[attr-defined]
    rules = {k: v for k, v in THRESHOLDS.items() if k != "reject"}
    want = decide_many(prediction, Thresholds.explicit(THRESHOLDS["reject"], **rules))
    assert [v.outcome for v in got] == [v.outcome for v in want]
    assert sum(len(v.regions) for v in got) >= len(got)  # a trained detector finds its scenes' boxes
    for a, b, boxes in zip(got, want, prediction.boxes, strict=True):
        # torch and ONNX Runtime boxes agree within 1e-3 px; a whole-pixel box may differ by one
        # where a side lies that close to an integer
        assert [r.category for r in a.regions] == [r.category for r in b.regions]
        for ra, rb in zip(a.regions, b.regions, strict=True):
            assert np.abs(np.subtract(ra.bbox, rb.bbox)).max() <= 1
            assert ra.peak == pytest.approx(rb.peak, abs=1e-3)
            assert ra.area_mm2 == pytest.approx(ra.area_px * 0.01)
        # every region is one of the boxes at or above the box level, and every such box is one
        confident = [bx for bx in boxes if bx[4] >= THRESHOLDS["region_level"]]
        assert sorted(r.category for r in b.regions) == sorted(bx[5] for bx in confident)
    # the regions lie on the scenes' true boxes, in image pixels: 3 of the 10 true boxes have a
    # region of their class at IoU >= 0.5 (measured; at the 0.3 box level, after 30 epochs on 40
    # scenes); regions placed at random or in canvas pixels would give about none
    hits = total = 0
    for verdict, truth in zip(got, box_bundle.boxes, strict=True):
        for x0, y0, x1, y1, cls in truth:
            total += 1
            hits += any(r.category == cls and _iou(r.bbox, (x0, y0, x1, y1)) >= 0.5 for r in verdict.regions)
    assert hits >= 2, (hits, total)


def _iou(a: tuple, b: tuple) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.mark.slow
def test_a_torch_free_runtime_gives_the_same_regions(box_bundle, torch_free_python, tmp_path):  # noqa: F811
    image = tmp_path / "part.npy"
    np.save(image, box_bundle.images[0])
    bare = _run(torch_free_python, box_bundle.path, image)
    full = _run(sys.executable, box_bundle.path, image)
    assert bare["torch_importable"] is False and bare["heavy_modules_loaded"] == []
    got, want = bare["verdict"], full["verdict"]
    assert got["outcome"] == want["outcome"] == "fail"
    assert got["regions"], "the scene's boxes give regions"
    assert [r["category"] for r in got["regions"]] == [r["category"] for r in want["regions"]]
    for a, b in zip(got["regions"], want["regions"], strict=True):
        assert np.abs(np.subtract(a["bbox"], b["bbox"])).max() <= 1
        assert a["peak"] == pytest.approx(b["peak"], abs=1e-3)

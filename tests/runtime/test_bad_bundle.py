"""A deployable bundle that is damaged, swapped or incomplete is refused with a clear BundleError."""

from __future__ import annotations

import numpy as np
import pytest

from flawscope.errors import BundleError


def _rewrite(path, files: dict[str, bytes] | None = None, **changes):
    """Rewrite a bundle's manifest (and files) properly, so its hashes are consistent again."""
    import dataclasses

    from flawscope.bundle import read_bundle, write_bundle

    manifest = read_bundle(path).manifest
    return write_bundle(path, dataclasses.replace(manifest, **changes), files or {})


def test_graph_of_another_canvas_is_refused(deployed, bundle_copy):
    import torch

    from flawscope.export.onnx_export import export_scorer
    from flawscope.features.backbones import load_backbone
    from flawscope.runtime import Inspector

    class Scorer(torch.nn.Module):  # a valid scorer graph, but for a 96 x 96 canvas
        def __init__(self) -> None:
            super().__init__()
            self.backbone = load_backbone("efficientnet_lite0")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.backbone(x)[0].mean(1)

    other = export_scorer(Scorer(), 96, 96)
    manifest = _rewrite(bundle_copy, {"model.onnx": other}).manifest
    assert manifest.preprocessing.height == 64  # the manifest still describes the 64-px model

    with pytest.raises(BundleError, match=r"input shape .* does not match the manifest's canvas 3x64x64"):
        Inspector.load(bundle_copy)


def test_missing_graph_is_named(bundle_copy):
    from flawscope.runtime import Inspector

    (bundle_copy / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.onnx.*missing"):
        Inspector.load(bundle_copy)


def test_altered_graph_is_named(bundle_copy):
    from flawscope.runtime import Inspector

    graph = bundle_copy / "model.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x01
    graph.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.onnx.*altered"):
        Inspector.load(bundle_copy)


def test_hand_edited_manifest_is_refused(bundle_copy):
    import json

    from flawscope.runtime import Inspector

    path = bundle_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["thresholds"][-1]["reject"] *= 10  # loosen the reject threshold by hand
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="manifest was altered"):
        Inspector.load(bundle_copy)


def test_trained_bundle_is_not_deployable(deployed):
    from flawscope.runtime import Inspector

    with pytest.raises(BundleError, match="flawscope export"):
        Inspector.load(deployed.trained)


def test_missing_folder_is_refused(tmp_path):
    from flawscope.runtime import Inspector

    with pytest.raises(BundleError, match="not a bundle folder"):
        Inspector.load(tmp_path / "nowhere")


def test_without_thresholds_scores_but_gives_no_verdict(deployed, bundle_copy):
    from flawscope.decide.thresholds import ThresholdHistory
    from flawscope.runtime import Inspector

    _rewrite(bundle_copy, thresholds=ThresholdHistory())
    inspector = Inspector.load(bundle_copy)
    assert inspector.thresholds is None
    prediction = inspector.score_many(deployed.good[:2])
    assert prediction.scores.shape == (2,) and np.isfinite(prediction.scores).all()
    assert prediction.maps[0].shape == deployed.good[0].shape[:2]
    with pytest.raises(BundleError, match="calibrate"):
        inspector.inspect(deployed.good[0])
    with pytest.raises(BundleError, match="calibrate"):
        inspector.inspect_many(deployed.good[:2])


def test_unknown_threshold_version_is_refused(deployed):
    from flawscope.runtime import Inspector

    assert Inspector.load(deployed.path, threshold_version=1).thresholds.version == 1
    with pytest.raises(BundleError, match="no threshold version 7"):
        Inspector.load(deployed.path, threshold_version=7)

"""The deployed ONNX runtime gives the torch model's scores, maps and verdicts, for every registered model."""

from __future__ import annotations

import numpy as np


def test_fp32_scores_and_maps_match_torch(exported, tiny_set):
    from flawscope.runtime import Inspector

    reference = exported.model.predict(tiny_set.images)
    runtime = Inspector.load(exported.deployed, threads=2).score_many(tiny_set.images)

    assert runtime.scores.shape == reference.scores.shape == (len(tiny_set.images),)
    np.testing.assert_allclose(runtime.scores, reference.scores, rtol=1e-3)
    for got, want in zip(runtime.maps, reference.maps, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * float(np.abs(want).max()))


def test_fp32_verdicts_match_torch(exported, tiny_set):
    from flawscope.decide.verdict import decide_many
    from flawscope.runtime import Inspector
    from flawscope.types import Outcome

    inspector = Inspector.load(exported.deployed, threads=2)
    assert inspector.thresholds is not None
    reference = exported.model.predict(tiny_set.images)
    expected = decide_many(reference, inspector.thresholds, inspector.model_hash)
    got = inspector.inspect_many(tiny_set.images)

    assert [v.outcome for v in got] == [v.outcome for v in expected]
    assert [len(v.regions) for v in got] == [len(v.regions) for v in expected]
    for g, e in zip(got, expected, strict=True):
        assert g.threshold_version == e.threshold_version and g.model_hash == e.model_hash
        for rg, re in zip(g.regions, e.regions, strict=True):
            assert abs(rg.area_px - re.area_px) <= max(2, 0.02 * re.area_px)
    # Not a vacuous comparison: the tiny set has parts on both sides of the reject threshold.
    outcomes = {v.outcome for v in got}
    assert Outcome.PASS in outcomes and Outcome.FAIL in outcomes


def test_graph_has_no_separate_pad_nodes(exported):
    import onnx

    graph = onnx.load(str(exported.deployed / "model.onnx")).graph
    ops = [node.op_type for node in graph.node]
    assert "Conv" in ops
    assert "Pad" not in ops  # merged into the convolutions (keeps ORT's NCHWc layout)

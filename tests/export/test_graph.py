"""Graph clean-up: zero Pad nodes merge into the convolutions they feed, with the same numbers."""

from __future__ import annotations

import numpy as np


def _pad_then_conv(mode: str, padding: list[int], weight: np.ndarray, size: int, **conv: object) -> bytes:
    """A two-node ONNX model: ``Pad`` (``padding`` an initializer) feeding a ``Conv`` with ``conv``."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Pad", ["image", "pads"], ["padded"], mode=mode),
        helper.make_node("Conv", ["padded", "w"], ["out"], **conv),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", "c", "h", "w"])],
        [numpy_helper.from_array(np.array(padding, np.int64), "pads"), numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_merge_pads_keeps_the_numbers():
    import onnx
    import onnxruntime as ort

    from flawscope.export.graph import merge_pads_into_convs

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    before = _pad_then_conv(
        "constant", [0, 0, 0, 1, 0, 0, 1, 2], weight, 16, strides=[2, 2], pads=[1, 0, 0, 1]
    )
    after = merge_pads_into_convs(before)

    merged = onnx.load_from_string(after)
    assert [n.op_type for n in merged.graph.node] == ["Conv"]
    pads = next(a for a in merged.graph.node[0].attribute if a.name == "pads")
    assert list(pads.ints) == [1, 1, 1, 3]
    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    run = [
        ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
        for m in (before, after)
    ]
    np.testing.assert_allclose(run[1], run[0], rtol=1e-6, atol=1e-6)


def test_reflect_pad_is_left_alone():
    import onnx

    from flawscope.export.graph import merge_pads_into_convs

    model = _pad_then_conv("reflect", [0, 0, 1, 1, 0, 0, 1, 1], np.ones((2, 3, 3, 3), np.float32), 8)
    merged = onnx.load_from_string(merge_pads_into_convs(model))
    assert [n.op_type for n in merged.graph.node] == ["Pad", "Conv"]

"""Run the frozen feature extractor (or a whole scorer) through ONNX Runtime while fitting.

The backbone is frozen, so fitting only needs its forward pass; ONNX Runtime runs this trunk,
cleaned like the exported graph (:mod:`flawscope.export.graph`), several times faster than torch
eager on a CPU (see benchmarks/RESULTS.md). The module is traced once per model instance and
canvas; if tracing or the session fails, the torch module is used instead, so the engine changes
speed only, never the result beyond float rounding.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)
ENGINES = ("auto", "torch", "onnxruntime")


def trace_to_onnx(
    module: nn.Module,
    height: int,
    width: int,
    output: str | Sequence[str],
    opset: int = 17,
    channels: int = 3,
    input_name: str = "image",
    batch: int = 2,
) -> bytes:
    """Trace ``module`` taking ``(B, channels, height, width)`` to ONNX bytes with a dynamic batch axis.

    Args:
        module: the torch module; it returns one tensor, or a tuple with one per output name.
        height: input height.
        width: input width.
        output: the output name(s), in the order the module returns them.
        opset: ONNX opset.
        channels: input channels.
        input_name: the graph input's name.
        batch: the example batch traced with (a multiple of the test-time views for a module
            that regroups its batch by view, :class:`~flawscope.models.views.ViewHead`).
    """
    outputs = [output] if isinstance(output, str) else list(output)
    example = torch.zeros(batch, channels, height, width)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # The TorchScript exporter's notes on constant folding are about its internals, not ours.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        target = Path(tmp) / "module.onnx"
        torch.onnx.export(
            module.eval(),
            (example,),
            str(target),
            input_names=[input_name],
            output_names=outputs,
            dynamic_axes={input_name: {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
            opset_version=opset,
            dynamo=False,
        )
        return target.read_bytes()


def make_runner(
    module: nn.Module, height: int, width: int, engine: str
) -> Callable[[np.ndarray], torch.Tensor]:
    """A function ``(B, 3, H, W) float32 -> output tensor`` on the chosen engine.

    Args:
        module: torch module with one image input and one output.
        height: canvas height.
        width: canvas width.
        engine: ``"torch"``, ``"onnxruntime"`` or ``"auto"`` (ONNX Runtime when it works).
    """

    def eager(batch: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            out: torch.Tensor = module(torch.from_numpy(batch))
            return out

    if engine == "torch":
        return eager
    try:
        from flawscope.export.graph import clean_graph  # onnx is imported only on this path

        return onnx_runner(clean_graph(trace_to_onnx(module, height, width, "output")))
    except Exception as exc:
        if engine == "onnxruntime":
            raise
        log.warning("ONNX Runtime feature engine unavailable (%s); using torch eager", exc)
        return eager


def ort_session(model_bytes: bytes) -> Any:
    """An ONNX Runtime CPU session for the training process, on torch's thread count."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads() or os.cpu_count() or 1
    options.log_severity_level = 3
    # Fitting streams many batches once: an arena sized for the largest batch would stay
    # allocated for the whole fit on top of the statistics being accumulated.
    options.enable_cpu_mem_arena = False
    # No spinning between calls: the statistics computed in torch between two batches need the
    # same cores (magnetic_tile PaDiM fit 20.8-22.5 s with spinning, 17.0-20.2 s without).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])


def onnx_runner(model_bytes: bytes) -> Callable[[np.ndarray], torch.Tensor]:
    """A function ``(B, 3, H, W) float32 -> first output`` running a graph with input ``image``."""
    session = ort_session(model_bytes)

    def run(batch: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"image": batch})[0])

    return run

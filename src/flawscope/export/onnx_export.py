"""Export a trained bundle to a deployable, torch-free bundle (ONNX graph + manifest).

The whole scorer (backbone, feature fusion and the nearest-neighbour search or Mahalanobis
distance) is one ONNX graph: ONNX Runtime runs the search as a single MatMul/ReduceMin, which on
this CPU is faster than handing features to faiss or numpy (no copy out of the session, and the
GEMM is MLAS's). Preprocessing and map smoothing are the shared numpy code in
:mod:`flawscope.data.preprocess`, identical in training and runtime.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flawscope.bundle import Bundle, sha256_bytes, versions, write_bundle
from flawscope.data.preprocess import to_batch
from flawscope.models.io import load_model

log = logging.getLogger(__name__)
OPSET = 17
ONNX_FP32 = "model.onnx"
ONNX_INT8 = "model.int8.onnx"


def export_scorer(module: torch.nn.Module, height: int, width: int) -> bytes:
    """Trace a scorer ``(B, 3, H, W) -> (B, H/8, W/8)`` to ONNX bytes with a dynamic batch axis."""
    example = torch.zeros(2, 3, height, width)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # The TorchScript exporter's notes on constant folding are about its internals, not ours.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        target = Path(tmp) / "scorer.onnx"
        torch.onnx.export(
            module.eval(),
            (example,),
            str(target),
            input_names=["image"],
            output_names=["patch_scores"],
            dynamic_axes={"image": {0: "batch"}, "patch_scores": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
        return target.read_bytes()


def quantize_int8(model_bytes: bytes, calibration: np.ndarray) -> bytes:
    """Static INT8 quantisation (QDQ, per-channel) of the backbone convolutions.

    Only ``Conv`` nodes are quantised: the distance computation stays in float32, because
    squared-distance differences of near neighbours would drown in 8-bit rounding.

    Args:
        model_bytes: fp32 ONNX model.
        calibration: ``(N, 3, H, W)`` float32 preprocessed good images.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"image": calibration[i : i + 1]} for i in range(len(calibration))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        source, prepared, target = (Path(tmp) / n for n in ("fp32.onnx", "prep.onnx", "int8.onnx"))
        source.write_bytes(model_bytes)
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        except Exception as exc:  # noqa: BLE001  (pre-processing is an optimisation only)
            log.warning("ONNX pre-processing for quantisation skipped: %s", exc)
            prepared = source
        quantize_static(
            str(prepared),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        return target.read_bytes()


def export_bundle(
    bundle_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    int8: bool = False,
    calibration_images: Sequence[np.ndarray] = (),
) -> Bundle:
    """Write a deployable bundle: ONNX graph(s), thresholds and the manifest.

    Args:
        bundle_path: trained bundle (from ``flawscope train``).
        output: folder of the deployable bundle.
        int8: also write an INT8 graph, calibrated on ``calibration_images``.
        calibration_images: good images for INT8 calibration (at least 16 recommended).

    Returns:
        The deployable bundle.
    """
    model, source = load_model(bundle_path)
    assert model.preprocessing_ is not None
    pre = model.preprocessing_
    fp32 = export_scorer(model.scorer(), pre.height, pre.width)
    files = {ONNX_FP32: fp32}
    deploy: dict[str, Any] = {"graph": ONNX_FP32, "opset": OPSET, "input": [None, 3, pre.height, pre.width]}
    if int8:
        if len(calibration_images) == 0:
            raise ValueError("INT8 export needs good images for calibration")
        batch, _ = to_batch(list(calibration_images), pre)
        files[ONNX_INT8] = quantize_int8(fp32, batch)
        deploy["graph_int8"] = ONNX_INT8
        deploy["int8_calibration_images"] = len(calibration_images)
    deploy["onnx_sha256"] = {name: sha256_bytes(data) for name, data in files.items()}
    manifest = {k: v for k, v in source.manifest.items() if k not in ("files", "manifest_sha256")}
    manifest["deploy"] = deploy
    manifest["versions_export"] = versions()
    out = Path(output)
    if out.resolve() == Path(bundle_path).resolve():
        raise ValueError("the deployable bundle must go to a folder other than the trained bundle")
    return write_bundle(out, manifest, files)

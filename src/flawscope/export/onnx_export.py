"""Export a trained bundle to a deployable, torch-free bundle (ONNX graph + manifest).

The whole scorer (backbone, feature fusion and the nearest-neighbour search or Mahalanobis
distance) is one ONNX graph: ONNX Runtime runs the search as a single MatMul/ReduceMin, which on
this CPU is faster than handing features to faiss or numpy (no copy out of the session, and the
GEMM is MLAS's). Preprocessing and map smoothing are the shared numpy code in
:mod:`flawscope.data.preprocess`, identical in training and runtime.

The traced graph is cleaned before it is saved (:func:`flawscope.export.graph.clean_graph`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flawscope.bundle import Bundle, sha256_bytes, versions, write_bundle
from flawscope.data.preprocess import Geometry, Preprocessing, finish_map, to_batch
from flawscope.errors import InputError
from flawscope.export.graph import clean_graph
from flawscope.models.engine import trace_to_onnx
from flawscope.models.io import load_model

log = logging.getLogger(__name__)
OPSET = 17
ONNX_FP32 = "model.onnx"
ONNX_INT8 = "model.int8.onnx"
# Median relative deviation of INT8 image scores from fp32 (after rescaling) on the calibration
# images above which the INT8 graph is flagged. Measured on magnetic_tile (benchmarks/parity.py):
# PaDiM deviated 10% at export and lost 0.077 image AUROC, PatchCore deviated 2.6% and still lost
# 0.067, so only a deviation of about 1% or less is taken as a sign the INT8 graph is usable.
INT8_TOLERANCE = 0.01


def export_scorer(module: torch.nn.Module, height: int, width: int, clean: bool = True) -> bytes:
    """Trace a scorer ``(B, 3, H, W) -> (B, H/8, W/8)`` to ONNX bytes with a dynamic batch axis.

    Args:
        module: the torch scorer (any module with one image input and one output).
        height: canvas height.
        width: canvas width.
        clean: fold constants and merge ``Pad`` into ``Conv`` (:func:`~flawscope.export.graph.clean_graph`);
            ``False`` keeps the graph as traced, for comparisons.
    """
    traced = trace_to_onnx(module, height, width, "patch_scores", OPSET)
    return clean_graph(traced) if clean else traced


def quantize_int8(model_bytes: bytes, calibration: np.ndarray) -> bytes:
    """Static INT8 quantisation (QDQ, per-channel) of the backbone convolutions.

    Only ``Conv`` nodes are quantised: the distance computation stays in float32, because
    squared-distance differences of near neighbours would drown in 8-bit rounding. Two more
    places stay in float, each measured to matter on the synthetic sets (image AUROC 0.95 -> 0.99
    for PaDiM at 64 px): the stem convolution, whose input is the normalised image itself, and
    every convolution's output, so the feature maps that the distance reads are not rounded again.

    Args:
        model_bytes: fp32 ONNX model.
        calibration: ``(N, 3, H, W)`` float32 preprocessed good images.
    """
    import onnx
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
        except Exception as exc:  # pre-processing is an optimisation only
            log.warning("ONNX pre-processing for quantisation skipped: %s", exc)
            prepared = source
        graph = onnx.load(str(prepared), load_external_data=False).graph
        inputs = {i.name for i in graph.input}
        stems = [n.name for n in graph.node if n.op_type == "Conv" and n.input[0] in inputs]
        quantize_static(
            str(prepared),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            nodes_to_exclude=stems,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            extra_options={"OpTypesToExcludeOutputQuantization": ["Conv"]},
        )
        return target.read_bytes()


def scale_output(model_bytes: bytes, factor: float) -> bytes:
    """Multiply the graph's ``patch_scores`` output by a constant (a ``Mul`` node at the end)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    inner = "patch_scores_unscaled"
    for node in graph.node:
        node.output[:] = [inner if name == "patch_scores" else name for name in node.output]
        node.input[:] = [inner if name == "patch_scores" else name for name in node.input]
    graph.initializer.append(
        numpy_helper.from_array(np.asarray(factor, dtype=np.float32), "patch_scores_scale")
    )
    graph.node.append(
        helper.make_node("Mul", [inner, "patch_scores_scale"], ["patch_scores"], name="rescale")
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


def image_scores(
    model_bytes: bytes, batch: np.ndarray, geometries: Sequence[Geometry], pre: Preprocessing
) -> np.ndarray:
    """``(N,)`` image scores of a preprocessed batch under an ONNX scorer (as the runtime computes them)."""
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    scores = []
    for start in range(0, len(batch), 8):
        (patch,) = session.run(["patch_scores"], {"image": batch[start : start + 8]})
        scores += [
            finish_map(grid, g, pre)[0] for grid, g in zip(patch, geometries[start : start + 8], strict=True)
        ]
    return np.asarray(scores, dtype=np.float64)


def _int8_graph(
    fp32: bytes, images: Sequence[np.ndarray], pre: Preprocessing
) -> tuple[bytes, dict[str, Any]]:
    """Quantise, then rescale the INT8 scores to the fp32 scale on the calibration images.

    8-bit features shift every distance upwards (10-30% on the synthetic sets, 2x for PaDiM on
    magnetic_tile), which would make the fp32-calibrated thresholds reject good parts; the median
    score ratio on the calibration images is folded into the graph so the thresholds keep their
    meaning. What is left after the rescaling is recorded in the manifest and checked against
    :data:`INT8_TOLERANCE`.
    """
    batch, geometries = to_batch(list(images), pre)
    quantised = quantize_int8(fp32, batch)
    reference = image_scores(fp32, batch, geometries, pre)
    raw = image_scores(quantised, batch, geometries, pre)
    ratio = float(np.median(raw) / np.median(reference)) if np.median(reference) > 0 else float("nan")
    if not np.isfinite(ratio) or ratio <= 0:
        log.warning("INT8 score scale could not be measured (ratio %s); scores are left unscaled", ratio)
        ratio = 1.0
    graph = scale_output(quantised, 1.0 / ratio)
    deviation = np.abs(raw / ratio - reference) / np.maximum(np.abs(reference), 1e-12)
    median = float(np.median(deviation))
    info = {
        "int8_calibration_images": len(images),
        "int8_score_scale": ratio,
        "int8_score_deviation": {"median": median, "max": float(deviation.max())},
        "int8_within_tolerance": median <= INT8_TOLERANCE,
        "int8_tolerance": INT8_TOLERANCE,
    }
    if median > INT8_TOLERANCE:
        log.warning(
            "INT8 image scores deviate from fp32 by a median %.1f%% on the calibration images "
            "(tolerance %.0f%%): expect a loss of accuracy",
            100 * median,
            100 * INT8_TOLERANCE,
        )
    return graph, info


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
        calibration_images: good images for INT8 calibration (at least 16 recommended); they set
            the activation ranges and the INT8-to-fp32 score scale.

    Returns:
        The deployable bundle.

    Raises:
        InputError: when ``output`` is the trained bundle, or INT8 is asked for without images.
        BundleError: for a missing or altered trained bundle.
    """
    out = Path(output)
    if out.resolve() == Path(bundle_path).resolve():
        raise InputError(output, "the deployable bundle must go to a folder other than the trained bundle")
    if int8 and len(calibration_images) == 0:
        raise InputError("calibration images", "INT8 export needs good images for calibration")
    model, source = load_model(bundle_path)
    assert model.preprocessing_ is not None
    pre = model.preprocessing_
    fp32 = export_scorer(model.scorer(), pre.height, pre.width)
    files = {ONNX_FP32: fp32}
    deploy: dict[str, Any] = {"graph": ONNX_FP32, "opset": OPSET, "input": [None, 3, pre.height, pre.width]}
    if int8:
        if len(calibration_images) < 16:
            log.warning("INT8 calibration on %d images; at least 16 are recommended", len(calibration_images))
        files[ONNX_INT8], info = _int8_graph(fp32, calibration_images, pre)
        deploy["graph_int8"] = ONNX_INT8
        deploy.update(info)
    deploy["onnx_sha256"] = {name: sha256_bytes(data) for name, data in files.items()}
    manifest = {k: v for k, v in source.manifest.items() if k not in ("files", "manifest_sha256")}
    manifest["deploy"] = deploy
    manifest["versions_export"] = versions()
    return write_bundle(out, manifest, files)

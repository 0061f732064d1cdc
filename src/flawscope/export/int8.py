"""INT8 export: a quantised embedder, a head refitted on its features, validated where labels exist.

The INT8 graph is two graphs joined: the model's embedder (backbone and feature fusion) with
static INT8 quantisation, and its head (Mahalanobis distance or nearest-neighbour search) in
float32. Quantisation alone is not enough: 8-bit rounding moves every feature a little, and a
head fitted on fp32 features (a Gaussian per position, a memory bank) reads that shift as
anomaly; on magnetic_tile PaDiM lost 0.077 image AUROC that way. So the head is fitted again on
the features the quantised embedder produces, from the good images the model was trained on
(:meth:`~flawscope.models.anomaly.AnomalyModel.fit_head`), and the deployed graph runs that very
quantised embedder. Its scores are then mapped onto the fp32 scale (:func:`score_map`), so the
bundle's thresholds keep the false-reject rate they were calibrated for.

Whether the INT8 graph is good enough can only be shown on labelled parts: when defective and
good images are given, both graphs score them and the image-AUROC loss is recorded against
:data:`INT8_MAX_AUROC_LOSS`; without them the graph is marked as not validated.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flawscope.data.preprocess import to_batch
from flawscope.decide.thresholds import Thresholds
from flawscope.decide.verdict import decide_many
from flawscope.declaration import OutputKind
from flawscope.export.graph import clean_graph
from flawscope.export.int8_check import (
    INT8_MAX_AUROC_LOSS,
    TruthBox,
    predict_images,
    rank_agreement,
    validate,
)
from flawscope.features.embedder import STRIDE
from flawscope.models.base import Model
from flawscope.models.engine import onnx_runner, trace_to_onnx
from flawscope.models.views import ViewExpand, ViewHead
from flawscope.types import Outcome, Prediction

log = logging.getLogger(__name__)
# Share of the embedder's convolutions, the first ones, that stay float in a box detector's INT8
# graph: box sides regressed from 8-bit early features lost 0.057 mAP@0.5 on NEU's validation
# images with all of them quantised, 0.019 with the first quarter in float and none with the
# first 40% (13 of 33; measured, see benchmarks/RESULTS.md "neu_surface detection").
DETECTOR_FLOAT_SHARE = 0.4


def quantize_int8(model_bytes: bytes, calibration: np.ndarray, float_share: float = 0.0) -> bytes:
    """Static INT8 quantisation (QDQ, per-channel weights) of an embedder graph.

    Convolutions run in 8 bits end to end (their outputs are quantised too, so ONNX Runtime
    fuses them into integer kernels; quantising only the convolutions' inputs was no faster).
    Two operators stay in float. The stem convolution, whose input is the normalised image: a
    resized part's anti-aliased levels fall between the 8-bit steps, and quantising it cost
    magnetic_tile 0.004-0.005 image AUROC (also when it read exact pixel levels) for a few per
    cent more speed. And average pooling: ONNX Runtime's 8-bit pooling is a slow scalar kernel.

    Args:
        model_bytes: fp32 ONNX embedder with one input, ``image``; no scoring head in it, since
            every supported operator is quantised.
        calibration: ``(N, 3, H, W)`` float32 preprocessed good images.
        float_share: share of the convolutions, the first in the graph, kept in float
            (:data:`DETECTOR_FLOAT_SHARE` for a box detector).
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
        convs = [n.name for n in graph.node if n.op_type == "Conv"]
        early = convs[: int(len(convs) * float_share)]
        # ONNX Runtime's QLinearAveragePool is a slow scalar kernel on x86: 8.6 ms per batch of 8
        # at 256 px (16% of the INT8 graph) against 0.8 ms for the float pool.
        pools = [n.name for n in graph.node if n.op_type == "AveragePool"]
        # Where the pools come before the levels are joined (PatchCore's per-level pooling), the
        # nodes reading them (the upsampling and the join) stay in float too, as they do when
        # the pool is the graph's last node: no 8-bit step between the pooled features.
        pooled = {n.output[0] for n in graph.node if n.op_type == "AveragePool"}
        after = [n.name for n in graph.node if n.op_type != "AveragePool" and pooled & set(n.input)]
        quantize_static(
            str(prepared),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            nodes_to_exclude=stems + early + pools + after,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        return target.read_bytes()


def join_graphs(embedder: bytes, model: Model) -> bytes:
    """One graph: ``embedder`` (input ``image``, output ``features``) into ``model``'s fp32 heads."""
    import onnx
    from onnx import compose

    pre = model.preprocessing_
    assert pre is not None
    channels = model._embedder().channels
    views = model.views()
    # With test-time views the head regroups the views' features and averages their outputs
    # (models/views.py), and a small graph in front makes the views: the same graph as fp32's.
    kinds = [spec.kind for spec in model.declaration().outputs]
    head_module = model.head() if views == (0,) else ViewHead(model.head(), views, kinds)
    head = clean_graph(
        trace_to_onnx(
            head_module,
            pre.height // STRIDE,
            pre.width // STRIDE,
            model.declaration().output_names,
            channels=channels,
            input_name="features",
            batch=2 * len(views),
        )
    )
    first, second = onnx.load_from_string(embedder), onnx.load_from_string(head)
    first.ir_version = second.ir_version = max(first.ir_version, second.ir_version)
    # Both graphs come from the same exporter, so internal names collide; the head's get a prefix.
    second = compose.add_prefix(second, "head/", rename_inputs=False, rename_outputs=False)
    joined = compose.merge_models(first, second, io_map=[("features", "features")])
    if views != (0,):
        front = onnx.load_from_string(
            clean_graph(trace_to_onnx(ViewExpand(views), pre.height, pre.width, "views"))
        )
        front.ir_version = joined.ir_version = max(front.ir_version, joined.ir_version)
        joined = compose.add_prefix(joined, "trunk/", rename_inputs=True, rename_outputs=False)
        front = compose.add_prefix(front, "views/", rename_inputs=False, rename_outputs=False)
        joined = compose.merge_models(front, joined, io_map=[("views", "trunk/image")])
    onnx.checker.check_model(joined)
    return joined.SerializeToString()


def affine_output(model_bytes: bytes, scale: float, offset: float) -> bytes:
    """Map the graph's ``patch_scores`` output to ``scale * scores + offset`` (nodes at the end).

    An affine map with ``scale > 0`` commutes with the map smoothing (a normalised blur) and the
    image score (the map's maximum), so image scores follow the same map.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    inner, scaled = "patch_scores_int8", "patch_scores_scaled"
    for node in graph.node:
        node.output[:] = [inner if name == "patch_scores" else name for name in node.output]
        node.input[:] = [inner if name == "patch_scores" else name for name in node.input]
    for name, value in (("patch_scores_scale", scale), ("patch_scores_offset", offset)):
        graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
    graph.node.extend(
        [
            helper.make_node("Mul", [inner, "patch_scores_scale"], [scaled], name="rescale"),
            helper.make_node("Add", [scaled, "patch_scores_offset"], ["patch_scores"], name="reoffset"),
        ]
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


def score_map(reference: np.ndarray, raw: np.ndarray, reject: float | None) -> tuple[float, float, str]:
    """The affine map from INT8 to fp32 image scores, from both graphs' scores of the same good parts.

    Two anchors: the medians, and, when a reject threshold is known, the highest good score
    below it under fp32 and the INT8 score of the same rank. Then as many of these good parts
    stay below the reject threshold in INT8 as in fp32, so the false-reject rate the thresholds
    were calibrated for carries over. INT8 scores spread differently: with the median ratio
    alone, 6 of 20 good test parts of a 64-px synthetic set failed under INT8 PatchCore against
    none in fp32; with this map, 2.

    Args:
        reference: ``(n,)`` fp32 image scores.
        raw: ``(n,)`` INT8 image scores of the same images.
        reject: the active reject threshold, or ``None``.

    Returns:
        ``(scale, offset, anchors)``: INT8 scores map to ``scale * s + offset``.
    """
    ref, quant = np.sort(reference), np.sort(raw)
    mid_ref, mid_quant = float(np.median(ref)), float(np.median(quant))
    if reject is not None:
        k = int(np.searchsorted(ref, reject, side="left"))  # good parts below the reject threshold
        if k >= 1 and ref[k - 1] > mid_ref and quant[k - 1] > mid_quant:
            scale = float((ref[k - 1] - mid_ref) / (quant[k - 1] - mid_quant))
            return scale, mid_ref - scale * mid_quant, f"median and rank {k} of {len(ref)}"
    scale = mid_ref / mid_quant if mid_quant > 0 else float("nan")
    if not np.isfinite(scale) or scale <= 0:
        log.warning("INT8 score scale could not be measured (%s); scores are left unscaled", scale)
        return 1.0, 0.0, "none"
    return scale, 0.0, "median ratio"


def count_fails(prediction: Prediction, thresholds: Thresholds) -> int:
    """Parts that fail under ``thresholds``, decided by :func:`~flawscope.decide.verdict.decide_many`."""
    return int(sum(v.outcome is Outcome.FAIL for v in decide_many(prediction, thresholds, regions=False)))


def _anomaly_scores(prediction: Prediction) -> np.ndarray:
    """The anomaly image scores of a prediction (its scores when anomaly is the decision)."""
    found = prediction.scores if prediction.anomaly_scores is None else prediction.anomaly_scores
    return np.asarray(found, dtype=np.float64)


def _affine_prediction(prediction: Prediction, scale: float, offset: float, decision: bool) -> Prediction:
    """What :func:`affine_output` does to a graph, applied to its finished outputs.

    The map smoothing and the peak commute with an increasing affine map.
    """
    from dataclasses import replace

    def mapped(values: np.ndarray) -> np.ndarray:
        return (scale * np.asarray(values, dtype=np.float32) + offset).astype(np.float32)

    if decision:
        return replace(
            prediction, scores=mapped(prediction.scores), maps=tuple(mapped(m) for m in prediction.maps)
        )
    assert prediction.anomaly_scores is not None
    return replace(
        prediction,
        anomaly_scores=mapped(prediction.anomaly_scores),
        anomaly_maps=tuple(mapped(m) for m in prediction.anomaly_maps),
    )


def embedder_graph(model: Model) -> bytes:
    """The fp32 embedder of a fitted model as ONNX: ``image (B, 3, H, W)`` to ``features``."""
    pre = model.preprocessing_
    assert pre is not None
    return clean_graph(trace_to_onnx(model._embedder(), pre.height, pre.width, "features"))


def build_int8(
    model: Model,
    fp32: bytes,
    calibration_images: Sequence[np.ndarray],
    refit_images: Sequence[np.ndarray] = (),
    validation: tuple[Sequence[np.ndarray], Sequence[int]] | None = None,
    good_images: Sequence[np.ndarray] = (),
    thresholds: Thresholds | None = None,
    validation_boxes: Sequence[Sequence[TruthBox]] = (),
) -> tuple[bytes, dict[str, Any]]:
    """The INT8 graph of a fitted model and what was measured about it (for the manifest).

    Args:
        model: the fitted model (left unchanged).
        fp32: its fp32 ONNX scorer.
        calibration_images: good images for the activation ranges.
        refit_images: the good images to fit the head again on quantised features (normally
            the training images); empty keeps the fp32 head, which costs accuracy.
        validation: labelled images ``(images, labels)`` (1 = defective) to measure the AUROC
            loss on.
        good_images: held-out good images (not fitted on) to map INT8 scores onto the fp32
            scale (:func:`score_map`); default: the calibration images.
        thresholds: the bundle's active thresholds: the anomaly threshold they hold (the reject
            threshold of a good-parts model, ``anomaly_reject`` of a station) anchors that map,
            and both graphs' false rejects on the good images are counted with them.
        validation_boxes: for a model that detects boxes, the true boxes of each validation
            image ``(x0, y0, x1, y1, class)`` in its pixels: both graphs' mAP@0.5 is measured
            on them (:func:`~flawscope.export.int8_check.validate`).

    Returns:
        The ONNX bytes and the ``int8_*`` manifest entries.
    """
    pre = model.preprocessing_
    assert pre is not None
    calibration, _ = to_batch(list(calibration_images), pre)
    declaration = model.declaration()
    detects = any(s.kind is OutputKind.BOXES for s in declaration.outputs)
    embedder = quantize_int8(embedder_graph(model), calibration, DETECTOR_FLOAT_SHARE if detects else 0.0)
    head = model
    if len(refit_images):
        # A shallow copy: fit_head rebinds the learned attributes, so the caller's model and
        # its (large) tensors stay as they are.
        head = copy.copy(model)
        head.fit_head(refit_images, onnx_runner(embedder))
    elif "patch_scores" in model.declaration().output_names:
        # Only a good-parts head is refitted (trained heads never are), so only its absence costs.
        log.warning(
            "INT8 head not refitted on quantised features (no training images): expect a loss of accuracy"
        )
    quantised = join_graphs(embedder, head)
    has_anomaly = "patch_scores" in declaration.output_names
    # INT8 anomaly scores are mapped onto the fp32 scale so that the bundle's thresholds
    # (calibrated on fp32 scores) keep their meaning for the INT8 graph. Trained heads give
    # probabilities, which need no map.
    good = good_images if len(good_images) else calibration_images
    reference = predict_images(fp32, good, pre, declaration)
    raw = predict_images(quantised, good, pre, declaration)
    anchor = None
    if thresholds is not None:
        anchor = thresholds.reject if declaration.decision == "patch_scores" else thresholds.anomaly_reject
    scale, offset, anchors = 1.0, 0.0, "none (no anomaly output)"
    graph = quantised
    if has_anomaly:
        scale, offset, anchors = score_map(_anomaly_scores(reference), _anomaly_scores(raw), anchor)
        graph = affine_output(quantised, scale, offset)
    mapped = (
        _affine_prediction(raw, scale, offset, declaration.decision == "patch_scores") if has_anomaly else raw
    )
    ref_scores, int8_scores = _anomaly_scores(reference), _anomaly_scores(mapped)
    if not has_anomaly:
        ref_scores, int8_scores = (
            np.asarray(reference.scores, np.float64),
            np.asarray(mapped.scores, np.float64),
        )
    deviation = np.abs(int8_scores - ref_scores) / np.maximum(np.abs(ref_scores), 1e-12)
    checked = (
        validate(fp32, graph, pre, declaration, *validation, boxes=validation_boxes)
        if validation is not None
        else None
    )
    within = None if checked is None else bool(checked.pop("within"))

    info = {
        "int8_calibration_images": len(calibration_images),
        "int8_head_refit_images": len(refit_images),
        "int8_score_map": {
            "scale": scale,
            "offset": offset,
            "anchors": anchors,
            "n_good": len(good),
            "reject": anchor,
        },
        "int8_score_deviation": {"median": float(np.median(deviation)), "max": float(deviation.max())},
        "int8_rank_agreement": rank_agreement(ref_scores, int8_scores),
        "int8_false_rejects": None
        if thresholds is None
        else {
            "fp32": count_fails(reference, thresholds),
            "int8": count_fails(mapped, thresholds),
            "n": len(good),
        },
        "int8_validation": checked,
        "int8_max_auroc_loss": INT8_MAX_AUROC_LOSS,
        "int8_within_tolerance": within,
    }
    if checked is None:
        log.warning("INT8 graph not validated on labelled parts: its accuracy is unknown")
    elif not within:
        from flawscope.runtime.int8_notice import int8_loss

        log.warning("INT8 graph loses %s", int8_loss(checked, INT8_MAX_AUROC_LOSS))
    return graph, info

"""Export a trained bundle to a deployable, torch-free bundle (ONNX graph + manifest).

The whole scorer (backbone, feature fusion and every head: the nearest-neighbour search or
Mahalanobis distance, trained classifiers and segmenters) is one ONNX graph whose outputs are
named as the model declares them (the manifest's ``model.declaration``). ONNX Runtime runs an
exact search as a single MatMul/ReduceMin, which on this CPU is faster than handing features to
faiss or numpy for a bank of a few thousand patches (no copy out of the session, and the GEMM is
MLAS's). A model with an index searched next to the graph (PatchCore's IVF search over a large
bank, :meth:`~flawscope.models.base.Model.host_search`) is exported as the embedder alone, whose
``features`` output the runtime searches with that index, rebuilt from the arrays written beside
the graph (``search.safetensors``, hashes in the manifest's ``deploy.search``). Preprocessing and
output finishing are the shared numpy code in :mod:`flawscope.data`, identical in training and
runtime.

The traced graph is cleaned before it is saved (:func:`flawscope.export.graph.clean_graph`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from flawscope.bundle import Bundle, check_trust, sha256_bytes, versions, write_bundle
from flawscope.errors import InputError
from flawscope.export.graph import clean_graph
from flawscope.export.int8 import build_int8
from flawscope.manifest import DeploySection, Int8Section, SearchSection
from flawscope.models.base import Scorer
from flawscope.models.engine import trace_to_onnx
from flawscope.models.io import load_model
from flawscope.search.ivf import arrays_to_bytes, faiss_version

log = logging.getLogger(__name__)
OPSET = 17
ONNX_FP32 = "model.onnx"
ONNX_INT8 = "model.int8.onnx"
SEARCH_FILE = "search.safetensors"
FEATURES = "features"


def export_scorer(
    module: torch.nn.Module,
    height: int,
    width: int,
    clean: bool = True,
    outputs: Sequence[str] = ("patch_scores",),
) -> bytes:
    """Trace a scorer ``(B, 3, H, W)`` -> its named outputs to ONNX bytes with a dynamic batch axis.

    Args:
        module: the torch scorer (one image input; one output per name, in that order).
        height: canvas height.
        width: canvas width.
        clean: fold constants and merge ``Pad`` into ``Conv`` (:func:`~flawscope.export.graph.clean_graph`);
            ``False`` keeps the graph as traced, for comparisons.
        outputs: the graph's output names (the model declaration's, in its order).
    """
    traced = trace_to_onnx(module, height, width, list(outputs), OPSET)
    return clean_graph(traced) if clean else traced


def export_bundle(
    bundle_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    int8: bool = False,
    calibration_images: Sequence[np.ndarray] = (),
    refit_images: Sequence[np.ndarray] = (),
    validation: tuple[Sequence[np.ndarray], Sequence[int]] | None = None,
    good_images: Sequence[np.ndarray] = (),
    validation_boxes: Sequence[Sequence[tuple[float, float, float, float, str]]] = (),
) -> Bundle:
    """Write a deployable bundle: ONNX graph(s), thresholds and the manifest.

    Args:
        bundle_path: trained bundle (from ``flawscope train``).
        output: folder of the deployable bundle.
        int8: also write an INT8 graph, calibrated on ``calibration_images``.
        calibration_images: good images for INT8 calibration (at least 16 recommended): they set
            the activation ranges (and the INT8-to-fp32 score map without ``good_images``).
        refit_images: good images to fit the model's head again on INT8 features, normally the
            ones it was trained on (:func:`flawscope.export.int8.build_int8`).
        validation: labelled images ``(images, labels)``, 1 = defective, on which the INT8
            graph's image-AUROC loss is measured and recorded.
        good_images: held-out good images on which INT8 scores are mapped to the fp32 scale, so
            the active thresholds keep their false-reject rate (default: the calibration images;
            export again after a new calibration).
        validation_boxes: the true boxes of each validation image, for a model that detects
            boxes: the INT8 graph's mAP@0.5 loss is measured on them.

    Returns:
        The deployable bundle.

    Raises:
        InputError: when ``output`` is the trained bundle, or INT8 is asked for without images.
        BundleError: for a missing or altered trained bundle, or one not signed by a key trusted
            here (the deployable bundle is signed with the user's key).
    """
    out = Path(output)
    if out.resolve() == Path(bundle_path).resolve():
        raise InputError(output, "the deployable bundle must go to a folder other than the trained bundle")
    if int8 and len(calibration_images) == 0:
        raise InputError("calibration images", "INT8 export needs good images for calibration")
    model, source = load_model(bundle_path)
    # The deployable bundle is signed with the user's key: the trained one must be trusted first.
    check_trust(source)
    assert model.preprocessing_ is not None
    pre = model.preprocessing_
    search = model.host_search()
    search_section: SearchSection | None = None
    if search is None:
        fp32 = export_scorer(model.scorer(), pre.height, pre.width, outputs=model.declaration().output_names)
    else:
        if int8:
            raise InputError(
                "int8",
                f"{model.name} searches its bank next to the graph (search='ivf'); INT8 export would "
                "need a second bank fitted on INT8 features, which is not supported: export fp32",
            )
        fp32 = export_scorer(
            Scorer(model._embedder(), torch.nn.Identity()).eval(), pre.height, pre.width, outputs=(FEATURES,)
        )
    files = {ONNX_FP32: fp32}
    if search is not None:
        arrays = search.arrays
        files[SEARCH_FILE] = arrays_to_bytes(arrays)
        search_section = SearchSection(
            kind="ivf_flat",
            file=SEARCH_FILE,
            features=FEATURES,
            output="patch_scores",
            nlist=len(arrays.centroids),
            nprobe=search.nprobe,
            bank_size=len(arrays.bank),
            dims=int(arrays.bank.shape[1]),
            sha256=arrays.hashes(),
            faiss=faiss_version(),
        )
    int8_info: Int8Section | None = None
    if int8:
        if len(calibration_images) < 16:
            log.warning("INT8 calibration on %d images; at least 16 are recommended", len(calibration_images))
        active = source.manifest.select_thresholds()
        files[ONNX_INT8], info = build_int8(
            model, fp32, calibration_images, refit_images, validation, good_images, active, validation_boxes
        )
        int8_info = Int8Section(**{k.removeprefix("int8_"): v for k, v in info.items()})
    deploy = DeploySection(
        graph=ONNX_FP32,
        opset=OPSET,
        input=(None, 3, pre.height, pre.width),
        onnx_sha256={name: sha256_bytes(data) for name, data in files.items() if name.endswith(".onnx")},
        graph_int8=ONNX_INT8 if int8 else None,
        int8=int8_info,
        versions=versions(),
        search=search_section,
    )
    manifest = replace(source.manifest, deploy=deploy, files={}, signature=None)
    return write_bundle(out, manifest, files)

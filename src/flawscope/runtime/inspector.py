"""ONNX Runtime inspector: image in, verdict out, with no torch in the process.

The image goes through the same numpy preprocessing as in training, the exported scorer graph
gives patch scores, the shared :func:`~flawscope.data.preprocess.finish_map` makes the image
score and anomaly map, and :mod:`flawscope.decide` turns them into a verdict with the bundle's
active thresholds. Anything that goes wrong for one part gives that part an ``error`` verdict
(a reject to the line), never a pass.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from flawscope.bundle import Bundle, read_bundle
from flawscope.data.preprocess import Geometry, Preprocessing, finish_map, to_canvas
from flawscope.decide.thresholds import Thresholds
from flawscope.decide.verdict import decide, error_verdict
from flawscope.errors import BundleError, FlawscopeError
from flawscope.types import Prediction, Verdict

log = logging.getLogger(__name__)
# Preference order when "auto" is asked for; TensorRT and CUDA need onnxruntime-gpu and a GPU.
PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def available_providers() -> list[str]:
    """Execution providers of the installed ONNX Runtime, in flawscope's preference order."""
    have = set(ort.get_available_providers())
    return [p for p in PREFERRED if p in have] or ["CPUExecutionProvider"]


def _graph_inputs_match(session: ort.InferenceSession, pre: Preprocessing, path: Path) -> None:
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != "image":
        raise BundleError(f"{path}: ONNX graph does not take one 'image' input as its manifest says")
    shape = inputs[0].shape
    if len(shape) != 4 or shape[1] != 3 or shape[2] != pre.height or shape[3] != pre.width:
        raise BundleError(
            f"{path}: ONNX input shape {shape} does not match the manifest's canvas 3x{pre.height}x{pre.width}"
        )


class Inspector:
    """A loaded deployable bundle, ready to inspect parts.

    Use :meth:`load`; the constructor takes already-validated parts.
    """

    def __init__(self, bundle: Bundle, session: ort.InferenceSession, thresholds: Thresholds | None, graph: str):
        self.bundle = bundle
        self.session = session
        self.thresholds = thresholds
        self.graph = graph
        self.preprocessing = Preprocessing.from_dict(bundle.manifest["preprocessing"])
        self.model_hash = bundle.model_hash
        self.version = bundle.version

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        int8: bool = False,
        providers: Sequence[str] | str = "cpu",
        threads: int | None = None,
        threshold_version: int | None = None,
    ) -> Inspector:
        """Open and verify a deployable bundle (from ``flawscope export``).

        Args:
            path: bundle folder.
            int8: use the INT8 graph (must have been exported with ``--int8``).
            providers: ``"cpu"`` (default), ``"auto"`` (TensorRT > CUDA > CPU, whichever is
                installed) or an explicit list of ONNX Runtime provider names.
            threads: intra-op threads (default: all cores).
            threshold_version: thresholds to use (default: the latest).

        Raises:
            BundleError: for a missing/altered bundle, a graph that does not match the manifest,
                or an unknown threshold version.
        """
        bundle = read_bundle(path)
        deploy = bundle.manifest.get("deploy")
        if not deploy:
            raise BundleError(f"{bundle.path}: not a deployable bundle; run 'flawscope export' on it first")
        graph = deploy.get("graph_int8") if int8 else deploy.get("graph")
        if not graph:
            raise BundleError(f"{bundle.path}: no INT8 graph in this bundle; export it with --int8")
        graph_path = bundle.file(graph)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        chosen = available_providers() if providers == "auto" else (
            ["CPUExecutionProvider"] if providers == "cpu" else list(providers)
        )
        try:
            session = ort.InferenceSession(str(graph_path), sess_options=options, providers=chosen)
        except Exception as exc:
            raise BundleError(f"{graph_path}: ONNX Runtime cannot load the graph ({exc})") from None
        pre = Preprocessing.from_dict(bundle.manifest["preprocessing"])
        _graph_inputs_match(session, pre, graph_path)
        thresholds = None
        versions = bundle.thresholds
        if versions:
            chosen_t: dict[str, Any] | None = versions[-1]
            if threshold_version is not None:
                chosen_t = next((t for t in versions if t["version"] == threshold_version), None)
                if chosen_t is None:
                    raise BundleError(f"{bundle.path}: no threshold version {threshold_version}")
            thresholds = Thresholds.from_dict(chosen_t)
        elif threshold_version is not None:
            raise BundleError(f"{bundle.path}: bundle has no thresholds; run 'flawscope calibrate'")
        log.info("inspector %s on %s", bundle.version, session.get_providers())
        return cls(bundle, session, thresholds, graph)

    @property
    def providers(self) -> list[str]:
        """Providers the session actually runs on."""
        return list(self.session.get_providers())

    def _run(self, batch: np.ndarray) -> np.ndarray:
        (out,) = self.session.run(["patch_scores"], {"image": batch})
        return np.asarray(out)

    def score_many(self, images: Sequence[np.ndarray]) -> Prediction:
        """Raw scores and anomaly maps (no thresholds), exactly as the trained model gives them.

        Raises:
            InputError: for an image of the wrong shape, dtype or size.
        """
        tensors, geometries = [], []
        for image in images:
            tensor, geometry = to_canvas(image, self.preprocessing)
            tensors.append(tensor)
            geometries.append(geometry)
        if not tensors:
            return Prediction(np.zeros(0, np.float32), ())
        patch = self._run(np.stack(tensors))
        return self._finish(patch, geometries)

    def _finish(self, patch: np.ndarray, geometries: Sequence[Geometry]) -> Prediction:
        scores, maps = [], []
        for grid, geometry in zip(patch, geometries, strict=True):
            score, amap = finish_map(grid, geometry, self.preprocessing)
            scores.append(score)
            maps.append(amap)
        return Prediction(np.asarray(scores, dtype=np.float32), tuple(maps))

    def _require_thresholds(self) -> Thresholds:
        if self.thresholds is None:
            raise BundleError(
                f"{self.bundle.path}: bundle has no calibrated thresholds, so it cannot give verdicts; "
                "run 'flawscope calibrate BUNDLE GOOD_IMAGES' before exporting"
            )
        return self.thresholds

    def inspect(self, image: np.ndarray) -> Verdict:
        """Inspect one part; see :meth:`inspect_many`."""
        return self.inspect_many([image])[0]

    def inspect_many(self, images: Sequence[np.ndarray | None]) -> list[Verdict]:
        """Inspect a batch of parts. A bad image gives that part an ``error`` verdict; the others are judged.

        Raises:
            BundleError: when the bundle has no thresholds (a configuration error, not a part's).
        """
        thresholds = self._require_thresholds()
        verdicts: list[Verdict | None] = [None] * len(images)
        tensors, geometries, slots = [], [], []
        for index, image in enumerate(images):
            try:
                if image is None:
                    raise FlawscopeError("no image")
                tensor, geometry = to_canvas(image, self.preprocessing)
            except FlawscopeError as exc:
                verdicts[index] = error_verdict(str(exc), self.model_hash, thresholds.version)
                continue
            tensors.append(tensor)
            geometries.append(geometry)
            slots.append(index)
        if tensors:
            try:
                prediction = self._finish(self._run(np.stack(tensors)), geometries)
            except Exception as exc:  # noqa: BLE001  (a failed inference must reject, not crash the line)
                log.exception("inference failed")
                for index in slots:
                    verdicts[index] = error_verdict(f"inference failed: {exc}", self.model_hash, thresholds.version)
            else:
                for index, score, amap in zip(slots, prediction.scores, prediction.maps, strict=True):
                    verdicts[index] = decide(float(score), amap, thresholds, self.model_hash)
        return [v for v in verdicts if v is not None]

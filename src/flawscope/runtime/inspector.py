"""ONNX Runtime inspector: image in, verdict out, with no torch in the process.

The image goes through the same numpy preprocessing as in training, the exported graph gives
the outputs the model declares (the manifest's ``model.declaration``: anomaly map, class
probabilities, defect-probability map...), the shared
:func:`~flawscope.data.outputs.finish_outputs` finishes them at each image's size, and
:func:`~flawscope.decide.verdict.decide_many` turns them into verdicts with the bundle's active
thresholds. Anything that goes wrong for one part gives that part an ``error`` verdict
(a reject to the line), never a pass. The session itself (providers, options, the graph checked
against the manifest, the search index) is opened by :mod:`flawscope.runtime.session`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from flawscope.bundle import Bundle, check_trust, read_bundle
from flawscope.data.imageio import ImageLike, is_path, read_image
from flawscope.data.outputs import finish_outputs
from flawscope.data.preprocess import Geometry, check_image, to_canvas
from flawscope.data.tiling import check_memory, score_tiled
from flawscope.data.tiling import layout as tile_layout
from flawscope.decide.thresholds import Thresholds
from flawscope.decide.verdict import decide_many, error_verdict
from flawscope.declaration import ModelDeclaration, OutputKind, declaration_of
from flawscope.errors import BundleError, FlawscopeError, InputError
from flawscope.runtime.canvas import CanvasLookup
from flawscope.runtime.int8_notice import int8_warning
from flawscope.runtime.session import check_graph, load_search, open_session
from flawscope.search.ivf import IvfIndex
from flawscope.types import Prediction, Provenance, Verdict

log = logging.getLogger(__name__)


class Inspector:
    """A loaded deployable bundle, ready to inspect parts.

    Use :meth:`load`; the constructor takes already-validated parts.
    """

    def __init__(
        self,
        bundle: Bundle,
        session: ort.InferenceSession,
        thresholds: Thresholds | None,
        graph: str,
        declaration: ModelDeclaration | None = None,
        *,
        signer: str = "",
        allow_unsigned: bool = False,
        search: IvfIndex | None = None,
    ):
        self.bundle = bundle
        self.declaration = declaration or declaration_of(bundle.manifest.model)
        self.search = search
        section = bundle.manifest.deploy.search if bundle.manifest.deploy is not None else None
        self.search_section = section if search is not None else None
        # What the graph itself outputs: the search's features stand in for the output it makes.
        renamed = (
            {} if self.search_section is None else {self.search_section.output: self.search_section.features}
        )
        self.output_names = tuple(renamed.get(name, name) for name in self.declaration.output_names)
        self.session = session
        self.thresholds = thresholds
        self.graph = graph
        self.preprocessing = bundle.manifest.preprocessing
        self.lookup = CanvasLookup(self.preprocessing)
        # Tiles per graph call of a tiled model (tiles of several images share a call).
        self.tile_batch = 8
        self.lookup.prepare(np.dtype(np.uint8))  # the common case, so the first part is not slower
        self.model_hash = bundle.model_hash
        # The label of the thresholds in use (a pinned older version), not the bundle's latest.
        self.version = bundle.manifest.version_label(thresholds.version if thresholds is not None else None)
        self.provenance = Provenance(
            model_hash=self.model_hash,
            model_version=self.version,
            threshold_version=thresholds.version if thresholds is not None else None,
            threshold_sha256=thresholds.sha256 if thresholds is not None else "",
            graph_sha256=bundle.manifest.files[graph],
            signer=signer,
            allow_unsigned=allow_unsigned,
        )

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        int8: bool = False,
        providers: Sequence[str] | str = "cpu",
        threads: int | None = None,
        threshold_version: int | None = None,
        spinning: bool = False,
        trusted_keys: str | os.PathLike[str] | None = None,
        allow_unsigned: bool = False,
    ) -> Inspector:
        """Open and verify a deployable bundle (from ``flawscope export``).

        Args:
            path: bundle folder.
            int8: use the INT8 graph (must have been exported with ``--int8``).
            providers: ``"cpu"`` (default), ``"auto"`` (TensorRT > CUDA > CPU, whichever is
                installed) or an explicit list of ONNX Runtime provider names.
            threads: intra-op threads (default: all cores).
            threshold_version: thresholds to use (default: the latest).
            spinning: let ONNX Runtime's worker threads spin between calls. Off by default: on a
                small line PC the spinning workers take the cores from the preprocessing and
                decisions between inferences (2 cores: batch-1 p99 19-21 ms with spinning,
                11-15 ms without; batch 8 108-140 against 128-147 img/s). Worth trying on
                a machine with cores to spare.
            trusted_keys: a station's trust store (a public key file, or a folder of ``*.pub``)
                whose keys alone are accepted; default: the keys made on this machine and those
                trusted with ``flawscope keys trust``.
            allow_unsigned: load a bundle without a trusted signature (development only); every
                audit record made with it says so (``allow_unsigned``).

        Raises:
            BundleError: for a missing/altered bundle, a signature that is missing, wrong, or from
                an untrusted or revoked key, a graph that does not match the manifest, or an
                unknown threshold version.
        """
        bundle = read_bundle(path)
        trust = check_trust(bundle, trusted_keys, allow_unsigned=allow_unsigned)
        deploy = bundle.manifest.deploy
        if deploy is None:
            raise BundleError(f"{bundle.path}: not a deployable bundle; run 'flawscope export' on it first")
        graph = deploy.graph_int8 if int8 else deploy.graph
        if not graph:
            raise BundleError(f"{bundle.path}: no INT8 graph in this bundle; export it with --int8")
        graph_path = bundle.file(graph)
        warning = int8_warning(deploy) if int8 else None
        if warning:
            log.warning("%s: %s", bundle.path, warning)
        pre = bundle.manifest.preprocessing
        declaration = declaration_of(bundle.manifest.model)
        session = open_session(graph_path, providers, threads=threads, spinning=spinning)
        search = load_search(bundle, deploy.search)
        check_graph(session, pre, graph_path, declaration, deploy.search)
        try:
            thresholds = bundle.manifest.select_thresholds(threshold_version)
        except InputError:
            if not bundle.thresholds.versions:
                problem = "bundle has no thresholds; run 'flawscope calibrate'"
            else:
                problem = f"no threshold version {threshold_version}"
            raise BundleError(f"{bundle.path}: {problem}") from None
        label = bundle.manifest.version_label(threshold_version)
        log.info("inspector %s on %s", label, session.get_providers())
        return cls(
            bundle,
            session,
            thresholds,
            graph,
            declaration,
            signer=trust.signer,
            allow_unsigned=trust.allow_unsigned,
            search=search,
        )

    @property
    def providers(self) -> list[str]:
        """Providers the session actually runs on."""
        return list(self.session.get_providers())

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(list(self.output_names), {"image": batch})
        raw = dict(zip(self.output_names, values, strict=True))
        if self.search is not None and self.search_section is not None:
            section = self.search_section
            raw[section.output] = self.search.search_grid(raw.pop(section.features))
        return raw

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Geometry]]:
        """The network input of each image, exactly as training makes it.

        Args:
            images: ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` uint8/uint16 (or float in [0, 1]) arrays.

        Returns:
            ``(N, 3, canvas_h, canvas_w)`` float32 batch and each image's geometry in the canvas.

        Raises:
            InputError: for an image of the wrong type, shape, dtype or size.
        """
        batch = np.empty((len(images), 3, self.preprocessing.height, self.preprocessing.width), np.float32)
        geometries = []
        for slot, image in enumerate(images):
            geometry = self.lookup.fill(image, batch[slot]) if isinstance(image, np.ndarray) else None
            if geometry is None:
                batch[slot], geometry = to_canvas(image, self.preprocessing)
            geometries.append(geometry)
        return batch, geometries

    def score_many(self, images: Sequence[np.ndarray]) -> Prediction:
        """Raw scores and anomaly maps (no thresholds), exactly as the trained model gives them.

        Raises:
            InputError: for an image of the wrong shape, dtype or size.
        """
        if len(images) == 0:
            return Prediction(np.zeros(0, np.float32), ())
        if self.preprocessing.tile:
            return self._score_tiled(images)
        batch, geometries = self.preprocess(images)
        return self._finish(self._run(batch), geometries)

    def _score_tiled(self, images: Sequence[np.ndarray]) -> Prediction:
        """Scores and maps of a tiled model: the tiles of all ``images``, batched together."""
        decision = self.declaration.decision
        if self.declaration.decision_kind is not OutputKind.ANOMALY_MAP:
            raise BundleError(f"{self.bundle.path}: tiling needs a model whose decision is an anomaly map")
        scores, maps = score_tiled(
            images, self.preprocessing, lambda batch: self._run(batch)[decision], self.tile_batch
        )
        return Prediction(scores, maps, "score")

    def _finish(self, raw: dict[str, np.ndarray], geometries: Sequence[Geometry]) -> Prediction:
        return finish_outputs(raw, geometries, self.preprocessing, self.declaration)

    def _require_thresholds(self) -> Thresholds:
        if self.thresholds is None:
            raise BundleError(
                f"{self.bundle.path}: bundle has no calibrated thresholds, so it cannot give verdicts; "
                "run 'flawscope calibrate BUNDLE GOOD_IMAGES' before exporting"
            )
        return self.thresholds

    def inspect(self, image: ImageLike) -> Verdict:
        """Inspect one part, given as an image array or the path of an image file.

        See :meth:`inspect_many`.
        """
        if not isinstance(image, np.ndarray) and not is_path(image):
            raise InputError("image", f"expected an image array or a file path, got {type(image).__name__}")
        return self.inspect_many([image])[0]

    def inspect_many(self, images: Sequence[ImageLike | None]) -> list[Verdict]:
        """Inspect a batch of parts. A bad image gives that part an ``error`` verdict; the others are judged.

        Args:
            images: ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` uint8/uint16 arrays, or paths of
                image files; a file that cannot be read gives an ``error`` verdict naming it.

        Raises:
            BundleError: when the bundle has no thresholds (a configuration error, not a part's).
        """
        thresholds = self._require_thresholds()
        if self.preprocessing.tile:
            return self._inspect_tiled(images, thresholds)
        verdicts: list[Verdict | None] = [None] * len(images)
        batch = np.empty((len(images), 3, self.preprocessing.height, self.preprocessing.width), np.float32)
        geometries: list[Geometry] = []
        slots: list[int] = []
        for index, image in enumerate(images):
            try:
                if image is None:
                    raise FlawscopeError("no image")
                # Anything else than an array or a path is refused by to_canvas, naming its type.
                pixels: Any = read_image(image) if is_path(image) else image  # type: ignore[arg-type]
                row = batch[len(slots)]
                geometry = self.lookup.fill(pixels, row) if isinstance(pixels, np.ndarray) else None
                if geometry is None:
                    row[...], geometry = to_canvas(pixels, self.preprocessing)
            except FlawscopeError as exc:
                verdicts[index] = error_verdict(str(exc), self.model_hash, thresholds.version)
                continue
            except Exception as exc:  # an odd array (OpenCV error) must reject that part, not the batch
                log.warning("image %d of the batch could not be preprocessed: %r", index, exc)
                verdicts[index] = error_verdict(
                    f"image could not be preprocessed: {exc}", self.model_hash, thresholds.version
                )
                continue
            geometries.append(geometry)
            slots.append(index)
        if slots:
            try:
                prediction = self._finish(self._run(batch[: len(slots)]), geometries)
            except Exception as exc:  # a failed inference must reject, not crash the line
                log.exception("inference failed")
                for index in slots:
                    verdicts[index] = error_verdict(
                        f"inference failed: {exc}", self.model_hash, thresholds.version
                    )
            else:
                decided = decide_many(prediction, thresholds, self.model_hash)
                # The line keeps the map of a part sent to review, so reviewers see it later: the
                # map its regions were cut from (anomaly or defect probability), else the anomaly map.
                shown = prediction.maps or prediction.anomaly_maps
                for slot, (index, verdict) in enumerate(zip(slots, decided, strict=True)):
                    amap = shown[slot] if shown else None
                    verdicts[index] = dataclasses.replace(verdict, anomaly_map=amap)
        return [v for v in verdicts if v is not None]

    def _inspect_tiled(self, images: Sequence[ImageLike | None], thresholds: Thresholds) -> list[Verdict]:
        """:meth:`inspect_many` of a tiled model: a part that cannot be tiled gets an error verdict."""
        verdicts: list[Verdict | None] = [None] * len(images)
        pixels: list[np.ndarray] = []
        slots: list[int] = []
        for index, image in enumerate(images):
            try:
                if image is None:
                    raise FlawscopeError("no image")
                array = check_image(read_image(image) if is_path(image) else image)  # type: ignore[arg-type]
                tile_layout(array.shape, self.preprocessing)  # smaller than a tile: refused here
                check_memory(array.shape, self.preprocessing.tile_scale)
            except FlawscopeError as exc:
                verdicts[index] = error_verdict(str(exc), self.model_hash, thresholds.version)
                continue
            pixels.append(array)
            slots.append(index)
        if slots:
            try:
                prediction = self._score_tiled(pixels)
            except Exception as exc:  # a failed inference must reject, not crash the line
                log.exception("inference failed")
                for index in slots:
                    verdicts[index] = error_verdict(
                        f"inference failed: {exc}", self.model_hash, thresholds.version
                    )
            else:
                decided = decide_many(prediction, thresholds, self.model_hash)
                for slot, (index, verdict) in enumerate(zip(slots, decided, strict=True)):
                    verdicts[index] = dataclasses.replace(verdict, anomaly_map=prediction.maps[slot])
        return [v for v in verdicts if v is not None]

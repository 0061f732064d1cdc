"""The ONNX Runtime session of a deployable bundle: providers, options, the graph checked, the search.

:meth:`flawscope.runtime.Inspector.load` opens the bundle's graph here, refuses a graph whose
input or outputs are not what the manifest declares, and rebuilds the nearest-neighbour index of
a bundle that searches (its arrays' hashes checked).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from flawscope.bundle import Bundle
from flawscope.data.preprocess import Preprocessing
from flawscope.declaration import OUTPUT_RANK, ModelDeclaration
from flawscope.errors import BundleError, InputError
from flawscope.manifest import SearchSection
from flawscope.search.ivf import IvfIndex, arrays_from_bytes

# Preference order when "auto" is asked for; TensorRT and CUDA need onnxruntime-gpu and a GPU.
PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def available_providers() -> list[str]:
    """Execution providers of the installed ONNX Runtime, in flawscope's preference order."""
    have = set(ort.get_available_providers())
    return [p for p in PREFERRED if p in have] or ["CPUExecutionProvider"]


def choose_providers(providers: Sequence[str] | str) -> list[str]:
    """Provider list for ONNX Runtime; unknown or uninstalled names are refused up front."""
    if providers == "auto":
        return available_providers()
    if providers == "cpu":
        return ["CPUExecutionProvider"]
    # A plain string is one provider name (list("CUDA...") would split it into letters).
    chosen = [providers] if isinstance(providers, str) else list(providers)
    have = ort.get_available_providers()
    missing = [p for p in chosen if p not in have]
    if not chosen or missing:
        raise InputError(
            "providers",
            f"{missing or chosen} not available in this ONNX Runtime; available: {', '.join(have)}",
        )
    return chosen


def open_session(
    graph_path: Path, providers: Sequence[str] | str, *, threads: int | None, spinning: bool
) -> ort.InferenceSession:
    """An ONNX Runtime session of the graph, fully optimised, on the chosen providers.

    Args:
        graph_path: the ONNX graph.
        providers: as :meth:`flawscope.runtime.Inspector.load` takes them.
        threads: intra-op threads (default: all cores).
        spinning: let the worker threads spin between calls.

    Raises:
        InputError: for a provider that is not available.
        BundleError: ONNX Runtime cannot load the graph.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    chosen = choose_providers(providers)
    try:
        return ort.InferenceSession(str(graph_path), sess_options=options, providers=chosen)
    except Exception as exc:
        raise BundleError(f"{graph_path}: ONNX Runtime cannot load the graph ({exc})") from None


def check_graph(
    session: ort.InferenceSession,
    pre: Preprocessing,
    path: Path,
    declaration: ModelDeclaration,
    search: SearchSection | None = None,
) -> None:
    """Refuse a graph whose input or outputs are not what the manifest declares."""
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != "image":
        raise BundleError(f"{path}: ONNX graph does not take one 'image' input as its manifest says")
    shape = inputs[0].shape
    if len(shape) != 4 or shape[1] != 3 or shape[2] != pre.height or shape[3] != pre.width:
        raise BundleError(
            f"{path}: ONNX input shape {shape} does not match the manifest's canvas "
            f"3x{pre.height}x{pre.width}"
        )
    outputs = {out.name: out.shape for out in session.get_outputs()}
    if search is not None and len(outputs.get(search.features, ())) != 4:
        raise BundleError(
            f"{path}: ONNX graph has no 4-D {search.features!r} output for its search (it has {outputs})"
        )
    for spec in declaration.outputs:
        if search is not None and spec.name == search.output:
            continue  # made by the search, not the graph
        rank = OUTPUT_RANK[spec.kind]
        if len(outputs.get(spec.name, ())) != rank:
            raise BundleError(
                f"{path}: ONNX graph has no {rank}-D {spec.name!r} output ({spec.kind}) as the manifest "
                f"declares (it has {outputs})"
            )


def load_search(bundle: Bundle, section: SearchSection | None) -> IvfIndex | None:
    """Rebuild a deployable bundle's nearest-neighbour index from its saved arrays (hashes checked)."""
    if section is None:
        return None
    if section.kind != "ivf_flat":
        raise BundleError(
            f"{bundle.path}: unknown search kind {section.kind!r} (this flawscope knows 'ivf_flat')"
        )
    try:
        arrays = arrays_from_bytes(bundle.file(section.file).read_bytes(), dict(section.sha256))
        index = IvfIndex(arrays, section.nprobe)
    except InputError as exc:
        raise BundleError(f"{bundle.path / section.file}: {exc}") from None
    if (len(arrays.bank), arrays.bank.shape[1], len(arrays.centroids)) != (
        section.bank_size,
        section.dims,
        section.nlist,
    ):
        raise BundleError(f"{bundle.path / section.file}: arrays do not match the manifest's search section")
    return index

"""Saving and loading models as bundles: safetensors plus the JSON manifest. No pickle.

The manifest's ``model`` section carries the model's declaration (task, labels, classes, named
outputs), which export and the runtime read.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from flawscope.bundle import MANIFEST, Bundle, read_bundle, sha256_bytes, versions, write_bundle
from flawscope.decide.thresholds import ThresholdHistory
from flawscope.declaration import declaration_of
from flawscope.errors import BundleError, FlawscopeError
from flawscope.features.backbones import BACKBONES
from flawscope.features.embedder import STRIDE
from flawscope.manifest import BackboneSection, Manifest, ModelSection, TrainingSection
from flawscope.models.base import Model
from flawscope.models.registry import get_model_class

WEIGHTS = "model.safetensors"


def save_model(
    model: Model,
    path: str | os.PathLike[str],
    training: TrainingSection | None = None,
    thresholds: ThresholdHistory | None = None,
) -> Bundle:
    """Write a fitted model to a bundle folder.

    Args:
        model: a fitted model.
        path: bundle folder.
        training: what it was trained on (dataset, files, skipped files, hold-out split). By
            default, a model fitted on file paths records those files (path and SHA-256), so
            that calibrating the bundle on them is refused.
        thresholds: threshold versions to store (normally empty until calibration).

    Returns:
        The written bundle.
    """
    if not model.is_fitted or model.preprocessing_ is None:
        raise RuntimeError("only a fitted model can be saved")
    files = getattr(model, "training_files_", None)
    if training is None and files:
        from flawscope.models.provenance import training_section

        root = os.path.commonpath([os.path.abspath(f) for f in files])
        root = root if os.path.isdir(root) else os.path.dirname(root)
        training = training_section(files, [], root, dataset=root)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_tensors().items()}
    data = save_safetensors(tensors, metadata={"model": model.name})
    spec = BACKBONES[model.config.backbone]
    manifest = Manifest(
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        model=ModelSection(model.name, model.hyperparameters(), STRIDE, model.declaration()),
        backbone=BackboneSection(spec.name, spec.sha256, spec.licence),
        preprocessing=model.preprocessing_,
        model_hash=sha256_bytes(data),
        training=training or TrainingSection(),
        thresholds=thresholds or ThresholdHistory(),
        versions=versions(),
    )
    return write_bundle(path, manifest, {WEIGHTS: data})


def load_model(path: str | os.PathLike[str]) -> tuple[Model, Bundle]:
    """Load and verify a bundle and rebuild its model.

    Raises:
        BundleError: for a missing, altered or inconsistent bundle.
    """
    bundle = read_bundle(path)
    manifest = bundle.manifest
    if manifest.deploy is not None and WEIGHTS not in manifest.files:
        raise BundleError(
            f"{bundle.path}: this is a deployable (ONNX) bundle; give the trained bundle it was exported from"
        )
    try:
        cls = get_model_class(manifest.model.name)
        model = cls(**cls.saved_params(dict(manifest.model.hyperparameters)))
        spec = BACKBONES.get(manifest.backbone.name)
    except (TypeError, ValueError, FlawscopeError) as exc:
        raise BundleError(f"{bundle.path / MANIFEST}: does not describe a known model ({exc})") from None
    weights = Path(bundle.file(WEIGHTS)).read_bytes()
    if sha256_bytes(weights) != manifest.model_hash:
        raise BundleError(f"{bundle.path / WEIGHTS}: weights do not match the manifest's model hash")
    if spec is None or spec.sha256 != manifest.backbone.weights_sha256:
        raise BundleError(f"{bundle.path}: backbone weights differ from those the model was trained with")
    try:
        declared = declaration_of(manifest.model)
    except FlawscopeError as exc:
        raise BundleError(f"{bundle.path / MANIFEST}: {exc}") from None
    try:
        tensors: dict[str, torch.Tensor] = load_safetensors(weights)
        model.load_declaration(declared)
        model.load_state_tensors(tensors)
    except Exception as exc:  # a bad tensor file or layout, whatever the library raises for it
        raise BundleError(f"{bundle.path / WEIGHTS}: weights do not fit a {cls.name} model ({exc})") from None
    model.preprocessing_ = manifest.preprocessing
    if model.declaration() != declared:
        raise BundleError(
            f"{bundle.path / MANIFEST}: the declared outputs {declared.output_names} do not match "
            f"what the {cls.name} model gives ({model.declaration().output_names})"
        )
    return model, bundle

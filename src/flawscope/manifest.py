"""The bundle manifest: one typed, frozen, versioned record, read and written only here.

Every module reads a bundle's description through :class:`Manifest` (``bundle.manifest.model.name``,
``bundle.manifest.deploy.graph``...), never by string key. The JSON form is produced by
:meth:`Manifest.to_dict` and read by :meth:`Manifest.from_dict`, which is strict:

- a key this flawscope does not know is an error naming it (a bundle written by a newer flawscope,
  or a hand edit), never silently dropped;
- a field missing from the file takes its declared default, so adding an optional field is one line
  in its section (with a default) and older files still load;
- a file of an older format version is upgraded on read (:data:`UPGRADES`); a change that cannot be
  expressed as a new optional field bumps :data:`FORMAT_VERSION` and adds one upgrade function.

Format history: 1 (flat ``int8_*`` keys in ``deploy``, ``versions_export`` at the top), 2 (this
record: ``deploy.int8`` and ``deploy.versions``, and a ``signature`` section).

The integrity hash and the signature cover the JSON as written, so they are checked before the
upgrade (:mod:`flawscope.bundle`). Torch-free.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flawscope.codec import decode, encode
from flawscope.data.preprocess import Preprocessing
from flawscope.decide.thresholds import ThresholdHistory, Thresholds
from flawscope.declaration import ModelDeclaration
from flawscope.errors import InputError
from flawscope.signing.trust import Signature

FORMAT = "flawscope-bundle"
FORMAT_VERSION = 2


def _frozen_map() -> Mapping[str, Any]:
    return types.MappingProxyType({})


# ------------------------------------------------------------------------------------ sections


@dataclass(frozen=True)
class ModelSection:
    """What model the bundle holds.

    Attributes:
        name: registry name of the model class.
        hyperparameters: the constructor arguments it was made with.
        output_stride: input pixels per patch-score cell.
        declaration: the model's task, labels, classes and named graph outputs (``None`` in
            bundles written before declarations: read as a good-parts model's ``patch_scores``;
            see :func:`flawscope.declaration.declaration_of`).
    """

    name: str
    hyperparameters: Mapping[str, Any] = field(default_factory=_frozen_map)
    output_stride: int = 8
    declaration: ModelDeclaration | None = None


@dataclass(frozen=True)
class BackboneSection:
    """The pretrained feature extractor.

    Attributes:
        name: backbone registry name.
        weights_sha256: SHA-256 of its pretrained weights (checked when the model is rebuilt).
        licence: licence of those weights.
    """

    name: str
    weights_sha256: str | None = None
    licence: str = ""


@dataclass(frozen=True)
class SkippedFile:
    """A training file that could not be used, and why."""

    path: str
    problem: str


@dataclass(frozen=True)
class FileRecord:
    """One image file, by its path under the dataset folder and the SHA-256 of its bytes."""

    path: str
    sha256: str


@dataclass(frozen=True)
class HoldoutSection:
    """The good images held out from fitting for calibration.

    Attributes:
        fraction: share of the good training images held out.
        n_images: how many were readable.
        rule: how they were chosen.
        file_list_sha256: hash of their ``path<TAB>sha256`` list.
        files: each held-out file (empty in bundles made before per-file records).
    """

    fraction: float = 0.0
    n_images: int = 0
    rule: str = ""
    file_list_sha256: str | None = None
    files: tuple[FileRecord, ...] = ()


@dataclass(frozen=True)
class TrainingSection:
    """What the model was fitted on.

    Attributes:
        dataset: dataset folder as given at training time.
        dataset_name: its name.
        layout: ``"mvtec"`` or ``"plain"``.
        n_images: images fitted on.
        file_list_sha256: hash of the fitted images' ``path<TAB>sha256`` list.
        skipped: unusable files.
        holdout: the calibration hold-out.
        fit_seconds: wall time of the fit.
        files: each file fitted on (empty in bundles made before per-file records, and for a
            model fitted on arrays): calibration refuses them (:mod:`flawscope.models.provenance`).
        task: the task trained for (``classify``, ``segment``...; ``None`` for good-parts models).
        split: how the labelled images were split (train / validation sizes, by group or not).
        labels: the classes, images per class, and what was decided about the labels (masks
            missing, synthetic defects pasted).
        augmentation: the augmentation (albumentations transforms, views, its version).
        log: the training log (epochs, losses, early stopping, temperature, ECE).
    """

    dataset: str | None = None
    dataset_name: str | None = None
    layout: str | None = None
    n_images: int = 0
    file_list_sha256: str | None = None
    skipped: tuple[SkippedFile, ...] = ()
    holdout: HoldoutSection = HoldoutSection()
    fit_seconds: float | None = None
    files: tuple[FileRecord, ...] = ()
    task: str | None = None
    split: Mapping[str, Any] | None = None
    labels: Mapping[str, Any] | None = None
    augmentation: Mapping[str, Any] | None = None
    log: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Int8Section:
    """How the INT8 graph was made and validated (see :func:`flawscope.export.int8.build_int8`).

    Attributes:
        calibration_images: images the activation ranges were set on.
        head_refit_images: images the head was fitted again on.
        score_map: the affine map of INT8 scores onto the fp32 scale.
        score_deviation: relative deviation of mapped INT8 from fp32 scores on good parts.
        rank_agreement: Spearman correlation of the two graphs' scores.
        false_rejects: false rejects of each graph at the reject threshold.
        validation: image AUROC of both graphs on labelled parts (``None``: not validated).
        max_auroc_loss: the AUROC loss budget.
        within_tolerance: whether the loss is within budget (``None``: not validated).
    """

    calibration_images: int = 0
    head_refit_images: int = 0
    score_map: Mapping[str, Any] = field(default_factory=_frozen_map)
    score_deviation: Mapping[str, Any] = field(default_factory=_frozen_map)
    rank_agreement: float | None = None
    false_rejects: Mapping[str, Any] | None = None
    validation: Mapping[str, Any] | None = None
    max_auroc_loss: float = 0.005
    within_tolerance: bool | None = None


@dataclass(frozen=True)
class DataSource:
    """One set of images a model was (re)trained on.

    Attributes:
        role: ``"original"`` (the base model's training set) or ``"feedback"`` (reviewed parts).
        path: the folder as given.
        n_images: images used from it.
        file_list_sha256: hash of the used images' ``path<TAB>sha256`` list.
        labels: images per label (``good`` and each defect type).
    """

    role: str
    path: str
    n_images: int = 0
    file_list_sha256: str | None = None
    labels: Mapping[str, int] = field(default_factory=_frozen_map)


@dataclass(frozen=True)
class LineageSection:
    """Where a retrained model comes from (``flawscope retrain``).

    Attributes:
        base_model_hash: the model it was retrained from.
        base_version: that model's version label.
        data: the image sets it was trained on.
        reviews: the review records (audit ``seq``) behind the feedback labels, and their count.
        excluded: images left out, with why (conflicting labels...).
        new_classes: defect types in the feedback the base model did not know.
        notes: what the retraining did with them, for people.
        created_at: ISO 8601 UTC time.
    """

    base_model_hash: str
    base_version: str = ""
    data: tuple[DataSource, ...] = ()
    reviews: tuple[int, ...] = ()
    excluded: Mapping[str, str] = field(default_factory=_frozen_map)
    new_classes: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    created_at: str = ""


@dataclass(frozen=True)
class MonitorSection:
    """The drift monitor's reference (:mod:`flawscope.monitor`), made at calibration time.

    Attributes:
        version: format of this section.
        created_at: ISO 8601 UTC time.
        position_sensitive: whether the part's position in the frame is charted (models that
            compare each position with its own statistics).
        stats: statistic name -> its value on each calibration image (``None``: undefined there).
        scores: the anomaly score of each calibration image.
    """

    version: int = 1
    created_at: str = ""
    position_sensitive: bool = False
    stats: Mapping[str, tuple[float | None, ...]] = field(default_factory=_frozen_map)
    scores: tuple[float, ...] = ()


@dataclass(frozen=True)
class SearchSection:
    """A nearest-neighbour index searched next to the graph (:mod:`flawscope.search.ivf`).

    The graph then ends at the features; the runtime rebuilds the index from the arrays in
    ``file`` (checked against ``sha256``) and turns the features into the declared ``output``.

    Attributes:
        kind: ``"ivf_flat"``.
        file: safetensors file of the deployable bundle holding ``bank``, ``centroids``, ``assign``.
        features: the graph output holding the ``(B, C, h, w)`` features.
        output: the declared output the search produces (``patch_scores``).
        nlist: inverted lists.
        nprobe: lists scanned per query.
        bank_size: bank vectors.
        dims: channels per vector.
        sha256: array name -> SHA-256 of its dtype, shape and bytes.
        faiss: faiss version at export.
    """

    kind: str
    file: str
    features: str
    output: str
    nlist: int
    nprobe: int
    bank_size: int
    dims: int
    sha256: Mapping[str, str] = field(default_factory=_frozen_map)
    faiss: str = ""


@dataclass(frozen=True)
class DeploySection:
    """The torch-free graphs of a deployable bundle (``flawscope export``).

    Attributes:
        graph: file name of the fp32 ONNX graph.
        opset: ONNX opset.
        input: input shape, ``None`` for the dynamic batch axis.
        onnx_sha256: graph file name -> SHA-256.
        graph_int8: file name of the INT8 graph, if any.
        int8: how the INT8 graph was made and validated.
        versions: software versions at export.
        search: a nearest-neighbour index searched next to the graph (``None``: none).
    """

    graph: str
    opset: int
    input: tuple[int | None, ...]
    onnx_sha256: Mapping[str, str] = field(default_factory=_frozen_map)
    graph_int8: str | None = None
    int8: Int8Section | None = None
    versions: Mapping[str, str] = field(default_factory=_frozen_map)
    search: SearchSection | None = None


@dataclass(frozen=True)
class Manifest:
    """Everything a bundle says about itself; the one typed record of ``manifest.json``.

    Attributes:
        model: the model.
        backbone: its pretrained backbone.
        preprocessing: how an image becomes the network input.
        model_hash: SHA-256 of the learned weights (``model.safetensors``).
        created_at: ISO 8601 time the model was saved.
        training: what it was fitted on.
        thresholds: every threshold version, oldest first (append-only).
        calibration: the report of the latest calibration (informative: decisions read ``thresholds``).
        metrics: the latest evaluation's report (informative).
        deploy: the deployable graphs (``None`` for a trained bundle).
        monitor: the drift monitor's reference from the latest calibration (``None``: none made).
        lineage: what a retrained model was made from (``None``: trained from scratch).
        versions: software versions at training.
        files: file name -> SHA-256 of every file of the bundle.
        signature: Ed25519 signature of everything above (``None``: unsigned).
    """

    model: ModelSection
    backbone: BackboneSection
    preprocessing: Preprocessing
    model_hash: str
    created_at: str = ""
    training: TrainingSection = TrainingSection()
    thresholds: ThresholdHistory = field(default_factory=ThresholdHistory)
    calibration: Mapping[str, Any] | None = None
    metrics: Mapping[str, Any] = field(default_factory=_frozen_map)
    deploy: DeploySection | None = None
    monitor: MonitorSection | None = None
    lineage: LineageSection | None = None
    versions: Mapping[str, str] = field(default_factory=_frozen_map)
    files: Mapping[str, str] = field(default_factory=_frozen_map)
    signature: Signature | None = None

    def select_thresholds(self, version: int | None = None) -> Thresholds | None:
        """The thresholds of a version (default: the latest); ``None`` when there are none.

        Raises:
            InputError: there are thresholds but no such version.
        """
        if not self.thresholds.versions:
            if version is not None:
                raise InputError("thresholds.version", "there are no thresholds; run 'flawscope calibrate'")
            return None
        return self.thresholds.active if version is None else self.thresholds.get(version)

    def version_label(self, threshold_version: int | None = None) -> str:
        """``<model hash prefix>.t<threshold version>`` (default: the latest; ``t0``: none)."""
        active = self.thresholds.versions[-1].version if self.thresholds.versions else 0
        return f"{self.model_hash[:12]}.t{active if threshold_version is None else threshold_version}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the current format (without the format envelope and integrity hash)."""
        out = encode(self)
        assert isinstance(out, dict)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], version: int = FORMAT_VERSION) -> Manifest:
        """Read a manifest's JSON of format ``version``, upgrading it to the current format first.

        Raises:
            InputError: naming the field (``manifest.deploy.graph``...) for an unknown, missing or
                mistyped field, or a version this flawscope cannot read.
        """
        if version > FORMAT_VERSION:
            raise InputError(
                "manifest.format_version",
                f"bundle format {version} is newer than this flawscope reads ({FORMAT_VERSION}); "
                "upgrade flawscope to load it",
            )
        if version < 1 or (version not in UPGRADES and version != FORMAT_VERSION):
            raise InputError("manifest.format_version", f"unknown bundle format {version}")
        current = dict(data)
        while version < FORMAT_VERSION:
            current, version = UPGRADES[version](current), version + 1
        result = decode(cls, current, "manifest")
        assert isinstance(result, Manifest)
        return result


# ------------------------------------------------------------------------------------ upgrades


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Format 1 -> 2: ``int8_*`` keys of ``deploy`` become ``deploy.int8``; ``versions_export`` moves."""
    data = {k: v for k, v in data.items() if k not in ("format", "format_version", "manifest_sha256")}
    exported = data.pop("versions_export", None)
    deploy = data.get("deploy")
    if isinstance(deploy, Mapping):
        deploy = dict(deploy)
        int8 = {k.removeprefix("int8_"): deploy.pop(k) for k in list(deploy) if k.startswith("int8_")}
        if int8:
            deploy["int8"] = int8
        if exported is not None:
            deploy["versions"] = exported
        data["deploy"] = deploy
    return data


#: Format version -> function turning that format's JSON into the next version's.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}

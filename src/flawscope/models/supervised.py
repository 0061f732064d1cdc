"""Models that learn from labelled defects, on the shared frozen trunk.

Four registered models (:mod:`flawscope.models.tasks`), one implementation
(:class:`SupervisedModel`), differing in what they learn from and what they output:

* ``classifier`` (task ``classify``): image labels -> the category (good or a defect class).
* ``segmenter`` (task ``segment``): masks where there are any, image labels otherwise -> a
  defect-probability map, per-pixel classes, regions, and the category.
* ``detector`` (task ``detect``): VOC boxes, learnt as box masks -> per-class maps whose
  regions are the boxes (with class and confidence), and the category.
* ``mixed`` (task ``mixed``, Božič et al. 2021; SuperSimpleNet, Rolih et al. 2024): good
  parts alone (synthetic anomalies in feature space), better with image labels, better again
  with masks -> good / defect, with a defect map.

All train a :class:`~flawscope.models.heads.DefectHead` on cached features
(:mod:`flawscope.features.cache`, :mod:`flawscope.models.training`), and with ``anomaly="padim"``
carry a PaDiM head fitted on the same features of the good training images: the station's graph
then runs the trunk once for both (its verdict sends unknown-looking parts to review).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from flawscope.data.augment import DEFAULT_TRANSFORMS, AugmentSpec
from flawscope.data.imageio import ImageLike
from flawscope.data.outputs import concat_predictions, finish_outputs
from flawscope.data.preprocess import Geometry
from flawscope.declaration import GOOD, ModelDeclaration, OutputKind, OutputSpec, Task
from flawscope.errors import InputError
from flawscope.features.cache import FeatureBank, extract_bank
from flawscope.features.embedder import STRIDE
from flawscope.models.base import Model, Progress
from flawscope.models.device import device_runner, training_device
from flawscope.models.engine import make_runner
from flawscope.models.ensemble import train_ensemble
from flawscope.models.finetune import finetune_trunk
from flawscope.models.heads import DefectHead, SupervisedHead
from flawscope.models.station import anomaly_rows, fit_anomaly_head, refit_anomaly_head
from flawscope.models.supervised_params import (
    FUSED_PEAKS_MARGIN,
    check_params,
    default_params,
    finetune_config,
    saved_params,
    train_config,
)
from flawscope.models.supervised_state import build_head, load_state, state_of
from flawscope.models.supervised_targets import DEFECT, classes_for, pixel_targets, soft_targets, with_pasted
from flawscope.models.training import TrainLog
from flawscope.models.tuned_head import choose_head
from flawscope.models.views import check_canvas, view_set
from flawscope.types import Prediction, Targets

log = logging.getLogger(__name__)


class SupervisedModel(Model):
    """A trained head (and optionally a PaDiM head) on the shared frozen embedder.

    Hyperparameters (besides :class:`~flawscope.models.base.ModelConfig`): see
    :mod:`flawscope.models.supervised_params`, where their defaults and checks live.
    """

    segments: ClassVar[bool] = False
    from_boxes: ClassVar[bool] = False
    binary: ClassVar[bool] = False
    # Whether ``finetune`` may tune the trunk (its objective: image labels, or boxes for a box_detector).
    tunable: ClassVar[bool] = False
    # The defaults in which this model differs from the shared ones (supervised_params).
    own_defaults: ClassVar[Mapping[str, Any]] = {}

    @classmethod
    def default_params(cls) -> dict[str, Any]:  # noqa: D102
        return default_params(cls.own_defaults)

    @classmethod
    def saved_params(cls, params: dict[str, Any]) -> dict[str, Any]:  # noqa: D102
        return saved_params(params)

    def check_params(self) -> None:  # noqa: D102
        check_params(self.params, self.name, segments=self.segments, tunable=self.tunable,
                     canvas=self.config.canvas or (32, 32))  # fmt: skip

    def _fine_level(self) -> bool:
        return bool(self.params["fine_level"])

    # --- declaration -----------------------------------------------------------------------
    def _seg_classes(self) -> int:
        return (1 + len([c for c in self.classes_ if c != GOOD])) if self.segments else 0

    def _class_map(self) -> bool:
        return self.segments and (self.from_boxes or self._seg_classes() > 2)

    def _score(self) -> str:
        """What the thresholds judge: the learned choice, else the hyperparameter (``auto``: the head)."""
        chosen = getattr(self, "score_", None) or self.params["score"]
        return "class" if chosen == "auto" else str(chosen)

    def declaration(self) -> ModelDeclaration:  # noqa: D102
        classes = tuple(getattr(self, "classes_", ()) or ())
        if not classes:
            raise RuntimeError(f"{type(self).__name__} is not fitted: its classes are not known yet")
        outputs = []
        if self.params["anomaly"]:
            outputs.append(OutputSpec("patch_scores", OutputKind.ANOMALY_MAP, STRIDE))
        outputs += [
            OutputSpec("defect_score", OutputKind.IMAGE_SCORE),
            OutputSpec("class_probs", OutputKind.CLASS_PROBS),
        ]
        if self.segments:
            outputs.append(OutputSpec("defect_map", OutputKind.DEFECT_MAP, STRIDE))
            if self._class_map():
                outputs.append(OutputSpec("class_map", OutputKind.CLASS_MAP, STRIDE))
        margin = self._fusion_margin()
        if self._score() == "fused" and margin is not None:
            outputs.append(OutputSpec("fusion_maps", OutputKind.FUSION_MAPS, STRIDE))
        return ModelDeclaration(
            task=self.task,
            labels=self.labels,
            outputs=tuple(outputs),
            classes=classes,
            decision="defect_map" if self._score() == "map" else "defect_score",
            extra={"fusion_margin": margin} if self._score() == "fused" and margin else {},
        )

    def _fusion_margin(self) -> int | None:
        """Cells a fused score's peaks keep from the padding (``None``: over the whole canvas)."""
        return FUSED_PEAKS_MARGIN[str(self.params["fused_peaks"])]

    def load_declaration(self, declaration: ModelDeclaration) -> None:  # noqa: D102
        self.classes_ = tuple(declaration.classes)

    # --- targets -----------------------------------------------------------------------------
    def _classes_for(self, targets: Targets) -> tuple[str, ...]:
        return classes_for(targets, self.from_boxes, self.binary)

    def _soft_targets(self, targets: Targets) -> np.ndarray | None:
        """``soft_labels``: per image, the class probabilities the image loss learns (else ``None``)."""
        return soft_targets(targets, self._classes_for(targets)) if self.params["soft_labels"] else None

    def _image_class(self, cls: str) -> int:
        if self.binary:
            return 0 if cls == GOOD else 1
        return self.classes_.index(cls)

    # --- fitting -----------------------------------------------------------------------------
    def fit(
        self,
        images: Sequence[ImageLike],
        targets: Targets | None = None,
        progress: Progress | None = None,
        *,
        validation_index: Sequence[int] | None = None,
    ) -> SupervisedModel:
        """Learn from labelled images.

        Args:
            images: the training images.
            targets: their classes (and masks, boxes, groups); a ``mixed`` model accepts none
                (all images are then good parts).
            progress: callback ``(stage, done, total)``.
            validation_index: images for early stopping and the temperature (default: a
                stratified ``validation`` share of the groups).

        Returns:
            ``self``; ``training_`` holds what happened (log, notes, split sizes).
        """
        from flawscope.data.labelled import LabelledSample
        from flawscope.data.splits import holdout as holdout_split

        images = self._read_training_images(images)
        if targets is None:
            if self.task is not Task.MIXED:
                raise InputError("targets", f"a {self.name} model needs image labels")
            targets = Targets(tuple(GOOD for _ in images))
        if len(targets) != len(images):
            raise InputError("targets", f"{len(targets)} labels for {len(images)} images")
        samples = [LabelledSample(str(i), c, None, targets.groups[i] if targets.groups else None)
                   for i, c in enumerate(targets.classes)]  # fmt: skip
        split = holdout_split(samples, float(self.params["validation"]), self.config.seed)
        train_idx, val_idx = list(split.train), list(split.validation)
        if validation_index is not None:
            val_idx = sorted(int(i) for i in validation_index)
            train_idx = [i for i in range(len(images)) if i not in set(val_idx)]
        pre = self._make_preprocessing([images[i] for i in train_idx] or list(images))
        check_canvas(self.views(), pre.height, pre.width)  # before any training time is spent
        training_device(str(self.params["device"]))  # a GPU asked for must be there, also before
        images, targets, train_idx = self._with_pasted(images, targets, train_idx)
        self._soft_targets(targets)  # refuse labels soft_labels cannot read before any training time
        tuned = self._finetune(images, targets, train_idx, val_idx, progress)
        bank = self.make_bank(images, targets, train_idx, progress)
        self.fit_bank(bank, targets, train_idx, val_idx, progress)
        if tuned is not None:
            self.training_["log"]["finetune"] = tuned  # in the manifest with the head's log
        self.training_["split"] = {
            "validation": len(val_idx),
            "train": len(train_idx),
            "by_group": split.by_group,
        }
        return self

    def _with_pasted(self, images: Sequence[np.ndarray], targets: Targets, train_idx: list[int]
                     ) -> tuple[list[np.ndarray], Targets, list[int]]:  # fmt: skip
        """Synthetic pasted defects for classes rarer than ``rare_below`` (training side only)."""
        below = int(self.params["rare_below"])
        images, targets, train_idx, notes = with_pasted(images, targets, train_idx, below, self.config.seed)
        if notes is not None:
            self._paste_notes = notes
        return images, targets, train_idx

    def _finetune(self, images: Sequence[np.ndarray], targets: Targets, train_idx: list[int],
                  val_idx: list[int], progress: Progress | None) -> dict[str, Any] | None:  # fmt: skip
        """``finetune`` != ``"none"``: tune the trunk in place (:mod:`flawscope.models.finetune`)."""
        self.trunk_tuned_ = False
        self._tuned_head: nn.Module | None = None
        mode = self.params["finetune"]
        if mode == "none":
            return None
        self.classes_ = self._classes_for(targets)
        pre = self._make_preprocessing([images[i] for i in train_idx] or list(images))
        labels = np.array([self._image_class(c) for c in targets.classes])
        config = finetune_config(self.params, self.config.seed)
        spec = self.augment_spec()
        done = finetune_trunk(
            self._embedder(), self.config.backbone, images, labels, train_idx, val_idx, pre,
            spec if spec.views else None, config, self.config.engine, progress, self._soft_targets(targets),
        )  # fmt: skip
        self.trunk_tuned_ = True
        self.runner_ = None
        self._tuned_head = done.head
        return done.to_dict()

    def views(self) -> tuple[int, ...]:  # noqa: D102
        return view_set(str(self.params["tta"]))

    def augment_spec(self) -> AugmentSpec:
        """The augmentation this model trains with (recorded in the manifest)."""
        transforms = (
            self.params["augment"] if self.params["augment"] is not None else dict(DEFAULT_TRANSFORMS)
        )
        return AugmentSpec(
            int(self.params["views"]), transforms, int(self.params["rare_below"]), self.config.seed
        )

    def make_bank(
        self,
        images: Sequence[np.ndarray],
        targets: Targets,
        train_idx: Sequence[int],
        progress: Progress | None = None,
        runner: Callable[[np.ndarray], torch.Tensor] | None = None,
    ) -> FeatureBank:
        """Preprocessing, classes and the feature bank of these images (augmented views of ``train_idx``)."""
        if self.params["finetune"] != "none" and not getattr(self, "trunk_tuned_", False):
            raise InputError("finetune", "the trunk is fine-tuned by fit(); a bank alone would be frozen")
        self.classes_ = self._classes_for(targets)
        self.preprocessing_ = self._make_preprocessing([images[i] for i in train_idx] or list(images))
        pre = self.preprocessing_
        self.runner_ = runner or make_runner(self._embedder(), pre.height, pre.width, self.config.engine)
        extract = self.runner_  # predictions keep the CPU runner; only the bank is made on a GPU
        device = training_device(str(self.params["device"]))
        if runner is None and device.type != "cpu":
            extract = device_runner(self._embedder(), device)
        masks, seg = pixel_targets(images, targets, self.classes_, segments=self.segments,
                                   from_boxes=self.from_boxes, binary=self.binary)  # fmt: skip
        spec = self.augment_spec()
        return extract_bank(
            images, masks, seg, pre, extract, spec if spec.views else None, train_idx, progress
        )

    def fit_bank(
        self,
        bank: FeatureBank,
        targets: Targets,
        train_idx: Sequence[int],
        val_idx: Sequence[int],
        progress: Progress | None = None,
        *,
        geometries: Sequence[Geometry] | None = None,
    ) -> SupervisedModel:
        """Train the heads on a feature bank (the preprocessing and classes already set).

        Args:
            bank: features of the images ``targets`` describes (and of augmented views).
            targets: the images' labels.
            train_idx: images to train on (with their augmented views).
            val_idx: images for early stopping and the temperature (clean views only).
            progress: callback ``(stage, done, total)``.
            geometries: every image's place in the canvas; read by models that learn boxes.
        """
        bank.check_channels(self._embedder().channels)
        labels = np.array([self._image_class(targets.classes[i]) for i in bank.image])
        train_rows = bank.rows(train_idx, views=True)
        val_rows = bank.rows(val_idx, views=False)
        fit_rows = bank.rows(train_idx, views=False)
        good_rows = (
            fit_rows[labels[fit_rows] == self._image_class(GOOD)] if GOOD in self.classes_ else fit_rows[:0]
        )
        reference = good_rows if len(good_rows) else fit_rows
        features = bank.features[torch.from_numpy(reference)].float()
        mean, std = features.mean(dim=(0, 2, 3)), features.std(dim=(0, 2, 3))
        p = self.params
        shape = (bank.features.shape[1], int(p["width"]), len(self.classes_), self._seg_classes())
        config = train_config(p, self.config.seed, self._image_class(GOOD) if GOOD in self.classes_ else None)
        soft = self._soft_targets(targets)
        synthetic = self._image_class(DEFECT) if self.binary and float(p["synthetic"]) > 0 else None
        self.head_module_: nn.Module
        train_log: TrainLog
        kept = getattr(self, "_tuned_head", None)
        head_mode = p["finetune_head"] if kept is not None else "retrain"
        retrained = None
        if head_mode != "keep":
            retrained = train_ensemble(
                lambda: DefectHead(*shape, bool(p["context"]), mean, std), int(p["ensemble"]),
                bank, train_rows, val_rows, labels, config, synthetic, progress,
                None if soft is None else soft[bank.image],
            )  # fmt: skip
        self.head_module_, train_log, head_choice = choose_head(
            head_mode, retrained, kept, bank, val_rows, labels
        )
        self.temperature_ = float(train_log.temperature)
        self.anomaly_: Any = None
        if p["anomaly"]:
            good = self._image_class(GOOD) if GOOD in self.classes_ else None
            val_good = val_rows[labels[val_rows] == good] if good is not None else None
            self.anomaly_ = fit_anomaly_head(self, bank, anomaly_rows(str(p["score"]), good_rows, val_good))
        self.head_: nn.Module | None = None
        self.fusion_: torch.Tensor | None = None
        self._score_notes: list[str] = []
        self.score_ = "class"  # while choosing: the heads without fusion
        self.score_ = (
            p["score"] if p["score"] in ("class", "map") else self._choose_score(bank, val_rows, labels)
        )
        counts = {
            c: int(sum(1 for i in train_idx if targets.classes[i] == c)) for c in sorted(set(targets.classes))
        }
        self.training_: dict[str, Any] = {
            "log": train_log.to_dict(),
            "classes": list(self.classes_),
            "train_counts": counts,
            "augmentation": self.augment_spec().to_dict(),
            "notes": [*getattr(self, "_paste_notes", []), *self._score_notes],
        }
        if head_choice is not None:
            self.training_["head_choice"] = head_choice
        return self

    def _choose_score(self, bank: FeatureBank, val_rows: np.ndarray, labels: np.ndarray) -> str:
        """``score="fused"`` or ``"auto"``: fusion statistics and the choice, on validation images."""
        import dataclasses

        from flawscope.models.score_choice import choose_model_score

        assert self.preprocessing_ is not None
        good = self._image_class(GOOD) if GOOD in self.classes_ else None
        head = self.head()
        assert isinstance(head, SupervisedHead)
        chosen = choose_model_score(
            head, self.temperature_, good, bank, val_rows, labels, str(self.params["score"])
        )
        self._score_notes = chosen.notes
        if chosen.area is not None:
            self.preprocessing_ = dataclasses.replace(self.preprocessing_, score_area=chosen.area)
        if chosen.fusion is not None:
            self.fusion_, self.head_ = chosen.fusion, None
        return chosen.score

    def predict_bank(self, bank: FeatureBank, rows: np.ndarray, geometries: Sequence[Geometry]) -> Prediction:
        """Finished outputs of bank rows, as :meth:`predict` gives them for the images (no trunk pass).

        Args:
            bank: the feature bank.
            rows: bank rows (clean views) to predict.
            geometries: each row's image geometry in the canvas.
        """
        assert self.preprocessing_ is not None
        declaration = self.declaration()
        names = declaration.output_names
        parts = []
        head, pre = self.head(), self.preprocessing_
        with torch.inference_mode():
            for start in range(0, len(rows), 32):
                index = torch.from_numpy(np.asarray(rows[start : start + 32]))
                out = head(bank.features[index].float())
                raw = {n: v.numpy() for n, v in zip(names, out, strict=True)}
                parts.append(finish_outputs(raw, geometries[start : start + 32], pre, declaration))
        return concat_predictions(parts)

    # --- the exported head -------------------------------------------------------------------
    def head(self) -> nn.Module:  # noqa: D102
        if getattr(self, "head_", None) is None:
            self.head_ = build_head(self)
        assert self.head_ is not None
        return self.head_

    def state_tensors(self) -> dict[str, torch.Tensor]:  # noqa: D102
        return state_of(self)

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:  # noqa: D102
        load_state(self, tensors)

    def fit_head(
        self,
        images: Sequence[np.ndarray],
        extract: Callable[[np.ndarray], torch.Tensor],
        progress: Progress | None = None,
    ) -> SupervisedModel:
        """Re-learn the anomaly head's statistics on another extractor's features (INT8).

        The trained heads stay as trained (retraining them is a training run); the INT8
        validation measures what quantisation costs them.
        """
        found: Any = getattr(self, "anomaly_", None)
        if found is not None and len(images):
            self.anomaly_ = refit_anomaly_head(self, found, images, extract, progress)
            self.head_ = None
        self.runner_ = extract
        return self

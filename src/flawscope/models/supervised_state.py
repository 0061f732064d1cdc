"""What a trained :class:`~flawscope.models.supervised.SupervisedModel` exports and saves.

The exported head (the trained heads, the optional anomaly head, PaDiM or PatchCore, and the
score's fusion, run on one trunk pass) and the model's tensors: what ``state_tensors`` writes to
the bundle's safetensors and ``load_state_tensors`` reads back (heads, temperature, the score
chosen, the fusion statistics, the anomaly head and, when the trunk was fine-tuned, its tuned
weights).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from flawscope.declaration import GOOD
from flawscope.models.ensemble import HeadEnsemble, member_count
from flawscope.models.heads import DefectHead, SupervisedHead
from flawscope.models.station import anomaly_module, load_anomaly_head
from flawscope.models.supervised_params import SCORES
from flawscope.models.tuned_trunk import load_tuned, tuned_state

if TYPE_CHECKING:
    from flawscope.models.supervised import SupervisedModel


def build_head(model: SupervisedModel) -> SupervisedHead:
    """The exported head of a fitted model: its inputs are the trunk's features (B, C, h, w)."""
    classes = model.classes_
    good = classes.index(GOOD) if GOOD in classes else None
    defect_classes = [c for c in classes if c != GOOD]
    seg_to_class = torch.tensor([0, *(classes.index(c) for c in defect_classes)], dtype=torch.long)
    found: Any = getattr(model, "anomaly_", None)
    anomaly = anomaly_module(model, found) if found is not None else None
    fusion = getattr(model, "fusion_", None) if model._score() == "fused" else None
    return SupervisedHead(
        model.head_module_, model.temperature_, good, seg_to_class if model.segments else None,
        model._class_map(), anomaly, fusion, model._fusion_margin(),
        model.params["fused_defect"] == "log_odds",
    ).eval()  # fmt: skip


def state_of(model: SupervisedModel) -> dict[str, torch.Tensor]:
    """The tensors a fitted model saves (names are the bundle's: ``head.*``, ``anomaly.*``, ...)."""
    tensors = {f"head.{k}": v for k, v in model.head_module_.state_dict().items()}
    tensors["temperature"] = torch.tensor([model.temperature_], dtype=torch.float32)
    tensors["score_kind"] = torch.tensor([SCORES.index(model._score())], dtype=torch.uint8)
    if model._score() == "fused" and getattr(model, "fusion_", None) is not None:
        tensors["fusion"] = model.fusion_
    found: Any = getattr(model, "anomaly_", None)
    if found is not None:
        tensors |= {f"anomaly.{k}": v for k, v in found.state_tensors().items()}
    if getattr(model, "trunk_tuned_", False):
        trunk = model._embedder().backbone
        tensors |= {f"trunk.{k}": v for k, v in tuned_state(trunk, model.params["finetune"]).items()}  # type: ignore[arg-type]
    return tensors


def load_state(model: SupervisedModel, tensors: dict[str, torch.Tensor]) -> None:
    """Set a model's learned state from its saved tensors (the declaration already loaded)."""
    head = {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
    members = member_count(head)
    channels = int(head["members.0.mean" if members else "mean"].shape[0])
    p = model.params

    def new_head() -> DefectHead:
        return DefectHead(
            channels, int(p["width"]), len(model.classes_), model._seg_classes(), bool(p["context"])
        )

    model.head_module_ = HeadEnsemble([new_head() for _ in range(members)]) if members else new_head()
    model.head_module_.load_state_dict(head)
    model.head_module_.eval()
    model.temperature_ = float(tensors["temperature"][0])
    if "score_kind" in tensors:  # bundles from before score="auto" judge by the hyperparameter
        model.score_ = SCORES[int(tensors["score_kind"][0])]
    model.fusion_ = tensors.get("fusion")
    trunk = {k.removeprefix("trunk."): v for k, v in tensors.items() if k.startswith("trunk.")}
    model.trunk_tuned_ = bool(trunk)
    if trunk:  # a fine-tuned trunk: its weights replace the ImageNet ones they were tuned from
        load_tuned(model._embedder().backbone, trunk, model.config.backbone)
        model.runner_ = None
    model.anomaly_ = None
    if p["anomaly"]:
        model.anomaly_ = load_anomaly_head(model, tensors)
    model.head_ = None

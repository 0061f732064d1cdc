"""What a model declares about itself: its task, the labels it learns from and its named outputs.

Export, the torch-free runtime, evaluation and the conformance test read this declaration
instead of assuming one output: a graph's outputs are named as declared, the runtime checks them
against it and finishes each kind the same way (:mod:`flawscope.data.outputs`), and
:func:`flawscope.decide.verdict.decide_many` turns the finished outputs into verdicts.

Output kinds (``B`` parts, ``h x w`` the canvas grid at the output's stride, ``K`` classes):

* ``anomaly_map``: ``(B, h, w)`` float patch anomaly scores (unbounded); the image's anomaly
  score is the highest value of its smoothed map (``patch_scores`` in every graph since the
  first bundle format).
* ``image_score``: ``(B,)`` float defect probability in ``[0, 1]`` from a trained head.
* ``class_probs``: ``(B, K)`` float class probabilities (temperature-scaled softmax); the
  declaration's ``classes`` name the columns, ``"good"`` among them when the model knows good parts.
* ``defect_map``: ``(B, h, w)`` float per-pixel defect probability in ``[0, 1]``.
* ``class_map``: ``(B, h, w)`` int64 per-pixel class index into ``classes`` (0 where the pixel is
  background), from which regions get their category and boxes their class.
* ``boxes``: ``(B, N, 6)`` float detections per image, highest confidence first: ``x0, y0, x1,
  y1`` in canvas pixels (x1/y1 exclusive), the confidence in ``[0, 1]`` and the class index into
  ``classes`` (stored as a float); a row whose confidence is 0 is empty (all zeros). The
  declaration's ``extra["box_level"]``, where a detector learnt one on its validation images, is
  the confidence a box needs to be a verdict's region unless the thresholds set ``region_level``.
* ``fusion_maps``: ``(B, 2, h, w)`` float standardised anomaly and defect maps of a fused score:
  the decision's ``image_score`` is completed by adding each map's highest cell *inside the
  image* (cells whose centre lies in the image, not in the mirrored padding; the declaration's
  ``extra["fusion_margin"]`` cells along the seam with the padding left out too), so that a
  graph, which cannot know where the image lies in the canvas, and its finishing give one score.

Pure standard library: the runtime reads declarations without torch.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flawscope.errors import InputError

GOOD = "good"


class Task(enum.StrEnum):
    """What a model is trained to tell."""

    ANOMALY = "anomaly"  # good parts only: how unusual is this part
    CLASSIFY = "classify"  # image labels: which category (good or a defect type)
    SEGMENT = "segment"  # masks: where the defect is, pixel by pixel
    DETECT = "detect"  # boxes: where each defect is, with its class
    MIXED = "mixed"  # good parts alone, improved by whatever image labels and masks exist


class LabelKind(enum.StrEnum):
    """What a model can learn from (a model takes any subset it declares)."""

    GOOD_PARTS = "good_parts"  # images of good parts, no annotation
    IMAGE = "image"  # one class per image
    MASK = "mask"  # a defect mask per defective image
    BOX = "box"  # class-labelled boxes per image


class OutputKind(enum.StrEnum):
    """The kinds of named outputs (see the module docstring for shapes)."""

    ANOMALY_MAP = "anomaly_map"
    IMAGE_SCORE = "image_score"
    CLASS_PROBS = "class_probs"
    DEFECT_MAP = "defect_map"
    CLASS_MAP = "class_map"
    BOXES = "boxes"
    FUSION_MAPS = "fusion_maps"


# Rank of each kind's array in a graph's output, batch axis included.
OUTPUT_RANK = {
    OutputKind.ANOMALY_MAP: 3,
    OutputKind.IMAGE_SCORE: 1,
    OutputKind.CLASS_PROBS: 2,
    OutputKind.DEFECT_MAP: 3,
    OutputKind.CLASS_MAP: 3,
    OutputKind.BOXES: 3,
    OutputKind.FUSION_MAPS: 4,
}
MAP_KINDS = (OutputKind.ANOMALY_MAP, OutputKind.DEFECT_MAP, OutputKind.CLASS_MAP)


@dataclass(frozen=True)
class OutputSpec:
    """One named output of a model's graph.

    Attributes:
        name: the graph output's name (``patch_scores`` for the anomaly map).
        kind: what it holds.
        stride: canvas pixels per grid cell, for maps (``None`` for per-image outputs).
    """

    name: str
    kind: OutputKind
    stride: int | None = None

    def to_dict(self) -> dict[str, Any]:  # noqa: D102
        return {"name": self.name, "kind": str(self.kind), "stride": self.stride}


@dataclass(frozen=True)
class ModelDeclaration:
    """A model's task, the labels it consumes, its classes and its named outputs.

    Attributes:
        task: what the model is trained to tell.
        labels: the kinds of labels it learns from.
        outputs: the graph's named outputs, in graph order.
        classes: class names of ``class_probs`` / ``class_map`` columns (``()`` without them).
        decision: name of the output whose image score the thresholds apply to: an
            ``anomaly_map`` (score = peak of the smoothed map, unbounded), an ``image_score``
            (defect probability), ``class_probs`` (score = 1 - P(good)) or a ``defect_map``
            (score = peak, or the mean of the ``score_area`` highest pixels, of the smoothed
            defect-probability map inside the image).
    """

    task: Task
    labels: tuple[LabelKind, ...]
    outputs: tuple[OutputSpec, ...]
    classes: tuple[str, ...] = ()
    decision: str = "patch_scores"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [o.name for o in self.outputs]
        if not names or len(set(names)) != len(names):
            raise InputError("declaration.outputs", f"need distinct output names, got {names}")
        if self.decision not in names:
            raise InputError("declaration.decision", f"{self.decision!r} is not one of the outputs {names}")
        if self.output(self.decision).kind not in (
            OutputKind.ANOMALY_MAP,
            OutputKind.IMAGE_SCORE,
            OutputKind.CLASS_PROBS,
            OutputKind.DEFECT_MAP,
        ):
            raise InputError("declaration.decision", f"{self.decision!r} gives no image score")
        class_kinds = {OutputKind.CLASS_PROBS, OutputKind.CLASS_MAP, OutputKind.BOXES}
        needs_classes = class_kinds & {o.kind for o in self.outputs}
        if needs_classes and not self.classes:
            raise InputError("declaration.classes", "class outputs need class names")
        if len(set(self.classes)) != len(self.classes):
            raise InputError("declaration.classes", f"class names repeat: {list(self.classes)}")

    def output(self, name: str) -> OutputSpec:
        """The output called ``name``.

        Raises:
            KeyError: when there is none.
        """
        for spec in self.outputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def first(self, kind: OutputKind) -> OutputSpec | None:
        """The first output of a kind, or ``None``."""
        return next((o for o in self.outputs if o.kind == kind), None)

    @property
    def output_names(self) -> list[str]:
        """Graph output names, in graph order."""
        return [o.name for o in self.outputs]

    @property
    def decision_kind(self) -> OutputKind:
        """Kind of the output the thresholds apply to."""
        return self.output(self.decision).kind

    @property
    def score_is_probability(self) -> bool:
        """Whether the thresholds judge a trained head's defect probability.

        Not an anomaly score, nor a fused sum of standardised evidence (``fusion_maps``).
        """
        return self.decision_kind != OutputKind.ANOMALY_MAP and self.first(OutputKind.FUSION_MAPS) is None

    @property
    def defect_classes(self) -> tuple[str, ...]:
        """The classes that are defects (all but ``"good"``)."""
        return tuple(c for c in self.classes if c != GOOD)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the manifest's ``model.declaration``)."""
        return {
            "task": str(self.task),
            "labels": [str(k) for k in self.labels],
            "outputs": [o.to_dict() for o in self.outputs],
            "classes": list(self.classes),
            "decision": self.decision,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelDeclaration:
        """Read :meth:`to_dict`'s form.

        Raises:
            InputError: naming the field that is missing or wrong.
        """
        try:
            outputs = tuple(
                OutputSpec(
                    str(o["name"]),
                    OutputKind(o["kind"]),
                    None if o.get("stride") is None else int(o["stride"]),
                )
                for o in data["outputs"]
            )
            return cls(
                task=Task(data["task"]),
                labels=tuple(LabelKind(k) for k in data["labels"]),
                outputs=outputs,
                classes=tuple(str(c) for c in data.get("classes", ())),
                decision=str(data["decision"]),
                extra=dict(data.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError("declaration", f"is not a model declaration ({exc!r})") from None


def anomaly_declaration(stride: int = 8) -> ModelDeclaration:
    """The declaration of a good-parts-only model whose graph gives ``patch_scores``.

    Bundles written before declarations existed are read with this one.
    """
    return ModelDeclaration(
        task=Task.ANOMALY,
        labels=(LabelKind.GOOD_PARTS,),
        outputs=(OutputSpec("patch_scores", OutputKind.ANOMALY_MAP, stride),),
        decision="patch_scores",
    )


def declaration_of(model_section: Any) -> ModelDeclaration:
    """The declaration of a manifest's model section (bundles without one: the anomaly one).

    Args:
        model_section: the typed :class:`flawscope.manifest.ModelSection` (or its JSON mapping).
    """
    if isinstance(model_section, Mapping):
        found = model_section.get("declaration")
        stride = model_section.get("output_stride", 8)
    else:
        found, stride = model_section.declaration, model_section.output_stride
    if found is None:
        return anomaly_declaration(int(stride))
    return found if isinstance(found, ModelDeclaration) else ModelDeclaration.from_dict(found)

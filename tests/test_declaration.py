"""The model declaration: what a model says about its task, labels, classes and outputs."""

from __future__ import annotations

import json

import pytest

from flawscope.declaration import (
    LabelKind,
    ModelDeclaration,
    OutputKind,
    OutputSpec,
    Task,
    anomaly_declaration,
    declaration_of,
)
from flawscope.errors import InputError


def _station() -> ModelDeclaration:
    return ModelDeclaration(
        task=Task.SEGMENT,
        labels=(LabelKind.GOOD_PARTS, LabelKind.IMAGE, LabelKind.MASK),
        outputs=(
            OutputSpec("patch_scores", OutputKind.ANOMALY_MAP, 8),
            OutputSpec("defect_score", OutputKind.IMAGE_SCORE),
            OutputSpec("class_probs", OutputKind.CLASS_PROBS),
            OutputSpec("defect_map", OutputKind.DEFECT_MAP, 8),
        ),
        classes=("good", "crack", "spot"),
        decision="defect_score",
    )


def test_a_defect_map_can_decide_and_a_class_map_cannot():
    declared = ModelDeclaration.from_dict({**_station().to_dict(), "decision": "defect_map"})
    assert declared.decision_kind is OutputKind.DEFECT_MAP
    outputs = (*_station().outputs, OutputSpec("class_map", OutputKind.CLASS_MAP, 8))
    with pytest.raises(InputError, match="no image score"):
        ModelDeclaration(Task.SEGMENT, (LabelKind.MASK,), outputs, ("good", "crack"), "class_map")


def test_round_trip_through_json():
    declared = _station()
    again = ModelDeclaration.from_dict(json.loads(json.dumps(declared.to_dict())))
    assert again == declared
    assert again.defect_classes == ("crack", "spot")
    assert again.decision_kind is OutputKind.IMAGE_SCORE
    assert again.first(OutputKind.DEFECT_MAP).name == "defect_map"
    assert again.first(OutputKind.CLASS_MAP) is None


def test_bundles_without_a_declaration_read_as_anomaly_models():
    old = {"name": "padim", "hyperparameters": {}, "output_stride": 8}
    declared = declaration_of(old)
    assert declared == anomaly_declaration(8)
    assert declared.task is Task.ANOMALY and declared.output_names == ["patch_scores"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"decision": "nothing"}, "decision"),
        ({"classes": ()}, "classes"),
        ({"classes": ("good", "good", "x")}, "classes"),
    ],
)
def test_inconsistent_declarations_are_refused(change, field):
    data = {**_station().to_dict(), **change}
    with pytest.raises(InputError, match=field):
        ModelDeclaration.from_dict(data)


def test_unknown_kind_names_the_declaration():
    data = _station().to_dict()
    data["outputs"][0]["kind"] = "heatmap"
    with pytest.raises(InputError, match="declaration"):
        ModelDeclaration.from_dict(data)


def test_the_manifest_carries_the_declaration_typed():
    from flawscope.data.preprocess import Preprocessing
    from flawscope.manifest import BackboneSection, Manifest, ModelSection

    manifest = Manifest(
        model=ModelSection("segmenter", {}, 8, _station()),
        backbone=BackboneSection("efficientnet_lite0"),
        preprocessing=Preprocessing(),
        model_hash="0" * 64,
    )
    again = Manifest.from_dict(json.loads(json.dumps(manifest.to_dict())))
    assert again.model.declaration == _station()
    assert declaration_of(again.model) == _station()
    data = manifest.to_dict()
    data["model"]["declaration"]["task"] = "guess"
    with pytest.raises(InputError, match=r"manifest\.model\.declaration\.task"):
        Manifest.from_dict(data)


def test_which_decisions_are_probabilities():
    assert _station().score_is_probability
    assert ModelDeclaration.from_dict({**_station().to_dict(), "decision": "defect_map"}).score_is_probability
    assert not anomaly_declaration().score_is_probability
    fused = ModelDeclaration.from_dict(
        {
            **_station().to_dict(),
            "outputs": [o.to_dict() for o in _station().outputs]
            + [OutputSpec("fusion_maps", OutputKind.FUSION_MAPS, 8).to_dict()],
        }
    )
    assert not fused.score_is_probability  # a sum of standardised evidence

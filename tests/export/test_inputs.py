"""Finding the images of an INT8 export from the trained bundle's manifest or given folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flawscope.errors import InputError
from flawscope.export.inputs import int8_inputs


@pytest.fixture
def dataset(tmp_path: Path):
    from flawscope.data.synthetic import SyntheticSpec, write_dataset

    spec = SyntheticSpec(size=(32, 32), n_train=12, n_test_good=3, n_test_defect_per_type=1, seed=3)
    return write_dataset(tmp_path / "parts", spec)


def _bare(dataset: str | None = None):
    """A manifest that says only where the training images were."""
    from flawscope.data.preprocess import Preprocessing
    from flawscope.manifest import BackboneSection, Manifest, ModelSection, TrainingSection

    training = TrainingSection(dataset)
    return Manifest(ModelSection("padim"), BackboneSection("x"), Preprocessing(), "", training=training)


def _manifest(dataset, fraction: float = 0.25, root: str | None = None):
    """What `train` records about its images (see flawscope.models.train)."""
    from flawscope.data.preprocess import Preprocessing
    from flawscope.manifest import BackboneSection, HoldoutSection, Manifest, ModelSection, TrainingSection
    from flawscope.models.train import file_list_hash, split_holdout

    fit, held = split_holdout(dataset.train, fraction)
    training = TrainingSection(
        dataset=root or dataset.root,
        file_list_sha256=file_list_hash(fit, dataset.root),
        holdout=HoldoutSection(fraction=fraction, n_images=len(held)),
    )
    return Manifest(ModelSection("padim"), BackboneSection("x"), Preprocessing(), "", training=training)


def test_training_split_is_reproduced_and_the_test_split_validates(dataset):
    inputs = int8_inputs(_manifest(dataset))
    assert len(inputs.refit) == 9 and len(inputs.calibration) == 3  # 12 good, a quarter held out
    assert inputs.validation is not None
    images, labels = inputs.validation
    assert len(images) == len(dataset.test) and set(labels) == {0, 1}
    assert inputs.notes == [] and inputs.skipped == []


def test_without_holdout_the_fitted_images_calibrate(dataset):
    inputs = int8_inputs(_manifest(dataset, fraction=0.0))
    assert len(inputs.refit) == 12 and len(inputs.calibration) == 12


def test_a_changed_training_set_is_noted(dataset):
    manifest = _manifest(dataset)
    first = Path(sorted(s.path for s in dataset.train)[1])  # a fitted image, not a held-out one
    shutil.copyfile(sorted(s.path for s in dataset.train)[2], first)
    inputs = int8_inputs(manifest)
    assert any("changed since training" in note for note in inputs.notes)


def test_a_folder_of_good_images_replaces_the_training_set(dataset, tmp_path):
    folder = tmp_path / "good"
    shutil.copytree(Path(dataset.root) / "train" / "good", folder)
    (folder / "broken.png").write_bytes(b"not a png")
    manifest = _bare(str(tmp_path / "gone"))
    inputs = int8_inputs(manifest, calibration_folder=folder, validation_folder=dataset.root)
    assert len(inputs.refit) == 12 and len(inputs.calibration) == 12
    assert [Path(p).name for p, _ in inputs.skipped] == ["broken.png"]
    assert inputs.validation is not None


def test_missing_training_images_need_a_folder(tmp_path):
    with pytest.raises(InputError, match="--calibration-images"):
        int8_inputs(_bare(str(tmp_path / "gone")))


def test_no_labelled_parts_is_noted(dataset, tmp_path):
    folder = tmp_path / "good"
    shutil.copytree(Path(dataset.root) / "train" / "good", folder)
    inputs = int8_inputs(_bare(), calibration_folder=folder)
    assert inputs.validation is None
    assert any("no labelled parts" in note for note in inputs.notes)
    only_good = tmp_path / "plain"
    shutil.copytree(folder, only_good / "good")
    inputs = int8_inputs(_bare(), calibration_folder=folder, validation_folder=only_good)
    assert inputs.validation is None
    assert any("both good and defective" in note for note in inputs.notes)


def test_an_empty_good_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError):
        int8_inputs(_bare(), calibration_folder=tmp_path / "empty")


def test_a_detector_without_good_parts_calibrates_on_every_class_and_validates_on_boxes(tmp_path):
    """NEU's layout: defect classes only, ``splits.csv``, VOC boxes in ``annotations/``."""
    import cv2
    import numpy as np

    from flawscope.data.preprocess import Preprocessing
    from flawscope.declaration import GOOD
    from flawscope.manifest import BackboneSection, HoldoutSection, Manifest, ModelSection, TrainingSection
    from flawscope.models import get_model_class

    root = tmp_path / "neu"
    (root / "annotations").mkdir(parents=True)
    rows = ["path,class,split"]
    for cls in ("crazing", "patches"):
        for i in range(8):
            name = f"{cls}_{i}"
            (root / "images").mkdir(exist_ok=True)
            cv2.imwrite(str(root / "images" / f"{name}.png"), np.full((40, 40), 50 + 10 * i, np.uint8))
            (root / "annotations" / f"{name}.xml").write_text(
                f"<annotation><object><name>{cls}</name><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>20</xmax>"
                "<ymax>30</ymax></bndbox></object></annotation>"
            )
            rows.append(f"images/{name}.png,{cls},{'test' if i >= 6 else 'train'}")
    (root / "splits.csv").write_text("\n".join(rows) + "\n")
    model = get_model_class("box_detector")()
    model.classes_ = ("crazing", "patches")
    assert GOOD not in model.classes_
    training = TrainingSection(str(root), task="detect", holdout=HoldoutSection(fraction=0.0))
    section = ModelSection("box_detector", declaration=model.declaration())
    manifest = Manifest(section, BackboneSection("x"), Preprocessing(), "", training=training)
    inputs = int8_inputs(manifest)
    assert len(inputs.calibration) == 12 and inputs.refit == []  # every training image, no good ones
    assert inputs.validation is not None and len(inputs.validation[0]) == 4
    assert inputs.validation_boxes == [
        ((1.0, 2.0, 20.0, 30.0, c),) for c in ("crazing",) * 2 + ("patches",) * 2
    ]
    assert inputs.export_args()["validation_boxes"] == inputs.validation_boxes

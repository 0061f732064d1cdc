"""Retraining from feedback: lineage, conflicting labels, new classes, and a bad feedback folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from flawscope.bundle import read_bundle
from flawscope.errors import InputError
from flawscope.improve.feedback import read_feedback


def test_feedback_reports_conflicts_and_new_classes(plant) -> None:
    feedback = read_feedback(plant.feedback)
    assert feedback.counts() == {"crack": 6, "good": 7}  # the conflicting image is out, both copies
    assert len(feedback.conflicts) == 1
    assert plant.conflict in feedback.excluded and "also labelled good" in feedback.excluded[plant.conflict]
    assert feedback.new_classes(("scratch", "spot")) == ("crack",)
    assert feedback.review_seqs[0] == 101  # review 100 labelled the conflicting image's original


def test_a_folder_that_is_not_a_feedback_dataset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no train/ folder"):
        read_feedback(tmp_path)
    (tmp_path / "train" / "good").mkdir(parents=True)
    with pytest.raises(InputError, match="no usable labelled image"):
        read_feedback(tmp_path)


def test_the_candidate_says_where_it_comes_from(plant, candidate) -> None:
    live = read_bundle(plant.live).manifest
    manifest = read_bundle(candidate).manifest
    lineage = manifest.lineage
    assert lineage is not None and lineage.base_model_hash == live.model_hash
    assert [d.role for d in lineage.data] == ["original", "feedback"]
    assert lineage.data[0].path == str(plant.dataset) and lineage.data[1].labels == {"crack": 6, "good": 7}
    assert lineage.new_classes == ("crack",) and any("new defect type" in n for n in lineage.notes)
    assert plant.conflict in lineage.excluded
    assert manifest.preprocessing == live.preprocessing  # comparable part by part
    assert manifest.select_thresholds() is not None and manifest.signature is not None
    assert manifest.training.n_images > live.training.n_images  # the feedback's good parts were fitted on
    # An anomaly model is never fitted on defects: the 6 reviewed cracks measure its recall.
    thresholds = manifest.select_thresholds()
    assert thresholds is not None and thresholds.recall is not None


def test_retrain_without_the_training_set_names_the_fix(plant, tmp_path: Path) -> None:
    from flawscope.improve.retrain import retrain

    with pytest.raises(InputError, match="--data"):
        retrain(plant.trained, plant.feedback, tmp_path / "c", data=tmp_path / "gone")


def test_duplicates_count_once_and_training_images_are_left_out(plant, tmp_path: Path) -> None:
    import shutil

    from flawscope.data.datasets import load_dataset
    from flawscope.improve.retrain import without_training_images

    feedback = tmp_path / "fb"
    shutil.copytree(plant.feedback, feedback)
    (feedback / "manifest.csv").unlink()  # read from folder names alone
    good = sorted((feedback / "train" / "good").iterdir())[1]  # [0] is the conflicting image
    shutil.copyfile(good, good.with_name("999_reviewed_again.png"))
    original = load_dataset(plant.dataset)
    shutil.copyfile(original.train[0].path, feedback / "train" / "good" / "998_seen_before.png")
    read = read_feedback(feedback)
    assert read.duplicates == {str(good.with_name("999_reviewed_again.png")): str(good)}
    assert read.counts() == {"crack": 6, "good": 8}
    fresh = without_training_images(read, original)
    assert fresh.counts() == {"crack": 6, "good": 7}
    seen = str(feedback / "train" / "good" / "998_seen_before.png")
    assert "base training set" in fresh.excluded[seen]

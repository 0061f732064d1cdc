"""Retraining that learns from the feedback's labelled defects: lineage, rare and new classes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flawscope.bundle import read_bundle
from flawscope.errors import InputError
from flawscope.improve.feedback import read_feedback

FAST = {"epochs": 3, "views": 1, "threads": 1}


def test_a_mixed_candidate_learns_the_new_type_with_lineage(plant, tmp_path: Path) -> None:
    from flawscope.improve.compare import compare_models, labelled_from_dataset
    from flawscope.improve.retrain import retrain

    result = retrain(plant.trained, plant.feedback, tmp_path / "c", task="mixed", params=FAST)
    live = read_bundle(plant.live).manifest
    manifest = read_bundle(result.deployed).manifest
    lineage = manifest.lineage
    assert lineage is not None and lineage.base_model_hash == live.model_hash
    assert [d.role for d in lineage.data] == ["original", "feedback"]
    assert dict(lineage.data[1].labels) == {"crack": 6, "good": 7}  # the conflicting image stays out
    assert plant.conflict in lineage.excluded and lineage.new_classes == ("crack",)
    assert any("learnt from the reviews (crack)" in n for n in lineage.notes)
    # It was fitted on the 6 reviewed cracks: its recall on them is no evidence and is not claimed.
    assert result.calibration.recall is None and result.calibration.n_defect == 0
    assert any("counts the 0 reviewed defective images" in n and "not the 6" in n for n in lineage.notes)
    assert manifest.training.task == "mixed" and manifest.preprocessing == live.preprocessing
    # A retrained head is an ensemble of three seeds, each stopped on a smoothed validation loss.
    hyper = manifest.model.hyperparameters
    assert hyper["ensemble"] == 3 and hyper["smooth"] == 3
    log = manifest.training.log
    assert log is not None and [m["seed"] for m in log["members"]] == [0, 1, 2]
    assert manifest.select_thresholds() is not None and manifest.signature is not None
    # Calibrated on the base model's own calibration images: fitted on every good image it was.
    base_held = read_bundle(plant.trained).manifest.training.holdout
    assert manifest.training.holdout.n_images == base_held.n_images == len(base_held.files) == 24
    assert "base model's calibration images" in manifest.training.holdout.rule
    assert any("base model's own 24 calibration images" in n for n in lineage.notes)
    # Comparable with the live model part by part.
    comparison = compare_models(plant.live, result.deployed, labelled_from_dataset(plant.later))
    assert not comparison.refused and comparison.candidate is not None
    assert "crack" in comparison.candidate.recall_by_type
    # On the base set's test split it was fitted on the defects: they are left out, not judged.
    base_test = labelled_from_dataset(plant.dataset)
    on_base = compare_models(plant.live, result.deployed, base_test)
    defects = [i for i in base_test if i.label != "good"]
    assert defects and on_base.trained_on == len(defects)
    assert on_base.candidate is not None and on_base.candidate.recall.n == 0
    assert on_base.candidate.frr.n == len(base_test) - len(defects)  # its good parts still count
    gate = next(g for g in on_base.gates if g.name == "recall on all labelled defects")
    assert not gate.passed and "no labelled defect to judge" in gate.detail and not on_base.passed


def test_rare_classes_are_named_and_handled(plant, tmp_path: Path) -> None:
    from flawscope.declaration import Task
    from flawscope.improve.labelled import labelled_for_retraining

    feedback = tmp_path / "fb"
    shutil.copytree(plant.feedback, feedback)
    (feedback / "manifest.csv").unlink()  # read from folder names alone
    # Three parts of a type nobody named before: too few to learn it as a class of its own.
    (feedback / "train" / "dent").mkdir()
    for path in sorted((plant.later / "test" / "scratch").iterdir())[:3]:
        shutil.copyfile(path, feedback / "train" / "dent" / f"dent_{path.name}")
    # A duplicate review of one good image is learnt once.
    good = sorted((feedback / "train" / "good").iterdir())[1]  # [0] is the conflicting one
    shutil.copyfile(good, good.with_name("999_again.png"))
    fb = read_feedback(feedback)
    dataset = str(plant.dataset)
    classify = labelled_for_retraining(dataset, fb, Task.CLASSIFY)
    assert "dent" not in {s.cls for s in classify.labelled.samples}
    assert any("dent (3)" in n and "not learnt yet" in n for n in classify.notes)
    assert list(fb.duplicates) == [str(good.with_name("999_again.png"))]  # counted once
    mixed = labelled_for_retraining(dataset, fb, Task.MIXED)
    assert {s.cls for s in mixed.feedback} == {"good", "defect"}  # good / defect: nothing lost
    assert any("learns every defect type as one class" in n for n in mixed.notes)
    # The base set's labelled defects (its test split's) are fitted on, its test good images never.
    assert not any("/test/good/" in s.path for s in mixed.original)
    tested = {s.path for s in mixed.original if "/test/" in s.path}
    assert tested and any("labelled defect images of its test split" in n for n in mixed.notes)
    alone = labelled_for_retraining(dataset, fb, Task.MIXED, base_defects=False)
    assert not any("/test/" in s.path for s in alone.original)
    assert {s.path for s in alone.original} == {s.path for s in mixed.original} - tested


def test_bad_task_and_no_labelled_defects_are_one_clear_line(plant, tmp_path: Path) -> None:
    from flawscope.improve.retrain import retrain

    with pytest.raises(InputError, match="--task"):
        retrain(plant.trained, plant.feedback, tmp_path / "a", task="detect")
    goods = tmp_path / "goods"
    shutil.copytree(plant.feedback / "train" / "good", goods / "train" / "good")
    # Good reviews only and the base set's labelled defects left out: nothing to learn defects from.
    with pytest.raises(InputError, match="no labelled defect to learn from"):
        retrain(plant.trained, goods, tmp_path / "b", task="classify", base_defects=False)


def test_cli_retrain_task_station_needs_a_task(plant, tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "flawscope.cli", "retrain", str(plant.trained), "--feedback",
         str(plant.feedback), "-o", str(tmp_path / "c"), "--station"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--station" in done.stderr and "--task" in done.stderr


def test_cli_retrain_ensemble_needs_a_task(plant, tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "flawscope.cli", "retrain", str(plant.trained), "--feedback",
         str(plant.feedback), "-o", str(tmp_path / "c"), "--ensemble", "3"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--ensemble" in done.stderr and "--task" in done.stderr

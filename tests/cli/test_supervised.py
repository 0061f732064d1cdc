"""``flawscope train --task`` and ``evaluate`` of labelled models, as a user runs them (subprocesses).

The module's own ``supervised_bundle`` (a segmenter on generated labelled parts) is not the
conftest's ``trained`` anomaly bundle.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from tests.export.test_supervised import write_labelled_set
from tests.test_cli import flawscope

FAST = ("--image-size", "64", "--param", "epochs=8", "--param", "views=0", "--param", "width=16")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_labelled_set(
        tmp_path_factory.mktemp("cli-labelled") / "parts", n_good=30, n_defect=8, n_test=5
    )


@pytest.fixture(scope="module")
def supervised_bundle(labelled: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli-bundle") / "bundle"
    run = flawscope(
        "train",
        labelled,
        "-o",
        out,
        "--task",
        "segment",
        "--holdout",
        "0.34",
        "--station",
        *FAST,
        cwd=out.parent,
    )
    assert run.rc == 0, run.err[-3000:]
    assert "segmenter" in run.out and "scratch" in run.out and "Calibrated thresholds" in run.out
    return out


def test_train_records_task_split_and_augmentation(supervised_bundle: Path):
    from flawscope.bundle import read_bundle

    training = read_bundle(supervised_bundle).manifest.training
    assert training.task == "segment"
    assert training.split is not None and training.split["validation"] > 0
    assert training.augmentation is not None and "albumentations" in training.augmentation
    assert training.labels is not None and set(training.labels["classes"]) == {"good", "scratch", "spot"}
    assert training.holdout.n_images >= 10


def test_calibration_finds_the_hold_out_and_refuses_the_training_images(
    supervised_bundle: Path, labelled: Path, tmp_path: Path
):
    from flawscope.bundle import read_bundle

    bundle = tmp_path / "bundle"
    shutil.copytree(supervised_bundle, bundle)
    training = read_bundle(bundle).manifest.training
    assert (
        len(training.files) == training.n_images and len(training.holdout.files) == training.holdout.n_images
    )
    trained = {f.sha256 for f in training.files}
    assert trained.isdisjoint(f.sha256 for f in training.holdout.files)
    # The group-stratified hold-out is found by content, not by repeating a split of the names.
    run = flawscope("calibrate", bundle, "--holdout-of", labelled, cwd=tmp_path)
    assert run.rc == 0, run.err[-3000:]
    assert f"{training.holdout.n_images}" in run.out and "version 2" in run.out
    # train/good holds images the segmenter was fitted on: refused, as for an anomaly bundle.
    run = flawscope("calibrate", bundle, labelled, cwd=tmp_path)
    assert run.rc == 2 and len(run.error_lines) == 1 and "used to train this bundle" in run.error_lines[0]


def test_evaluate_reports_categories_and_segmentation(
    supervised_bundle: Path, labelled: Path, tmp_path: Path
):
    run = flawscope(
        "evaluate",
        supervised_bundle,
        labelled,
        "--json",
        tmp_path / "m.json",
        "--report",
        tmp_path / "r.html",
        cwd=tmp_path,
    )
    assert run.rc == 0, run.err[-3000:]
    metrics = json.loads((tmp_path / "m.json").read_text())
    categories = metrics["categories"]
    assert categories["classes"] == ["good", "scratch", "spot"] and categories["n"] == 15
    assert sum(map(sum, categories["confusion"])) == 15
    assert "all" in metrics["segmentation"]["dice"]
    html = (tmp_path / "r.html").read_text()
    for section in ('id="categories"', 'id="segmentation-metrics"', 'id="segmentation"'):
        assert section in html
    twin = json.loads((tmp_path / "r.json").read_text())
    assert twin["categories"]["confusion"] == categories["confusion"]


def test_a_class_too_small_stops_training_before_any_image_is_read(labelled: Path, tmp_path: Path):
    data = tmp_path / "small"
    shutil.copytree(labelled, data)
    for extra in sorted((data / "train" / "spot").iterdir())[3:]:
        extra.unlink()
    start = time.perf_counter()
    run = flawscope("train", data, "-o", tmp_path / "b", "--task", "classify", *FAST, cwd=tmp_path)
    assert run.rc == 2 and len(run.error_lines) == 1 and "Traceback" not in run.err
    assert "class 'spot'" in run.error_lines[0] and "3 image" in run.error_lines[0]
    assert not (tmp_path / "b").exists()
    print(f"\nrefused in {time.perf_counter() - start:.1f} s")


def test_the_same_image_in_train_and_test_is_refused(labelled: Path, tmp_path: Path):
    data = tmp_path / "dup"
    shutil.copytree(labelled, data)
    source = sorted((data / "train" / "good").iterdir())[0]
    shutil.copy(source, data / "test" / "good" / "copy_of_a_training_image.png")
    run = flawscope("train", data, "-o", tmp_path / "b", "--task", "classify", *FAST, cwd=tmp_path)
    assert (
        run.rc == 2
        and "same image as" in run.error_lines[0]
        and "copy_of_a_training_image" in run.error_lines[0]
    )


def test_a_good_parts_model_is_pointed_to_task(labelled: Path, tmp_path: Path):
    run = flawscope("train", labelled, "-o", tmp_path / "b", "--model", "segmenter", *FAST, cwd=tmp_path)
    assert run.rc == 2 and "--task segment" in run.error_lines[0]


def test_cross_validation_from_the_command_line(supervised_bundle: Path, labelled: Path, tmp_path: Path):
    run = flawscope(
        "evaluate", supervised_bundle, labelled, "--cv", "2", "--json", tmp_path / "cv.json", cwd=tmp_path
    )
    assert run.rc == 0, run.err[-3000:]
    result = json.loads((tmp_path / "cv.json").read_text())
    assert result["folds"] == 2 and result["n_tested"] == result["n_images"]
    assert 0.0 <= result["image_auroc"] <= 1.0


def test_a_classifier_report_has_categories_and_no_maps(labelled: Path, tmp_path: Path):
    out = tmp_path / "clf"
    run = flawscope("train", labelled, "-o", out, "--task", "classify", *FAST, cwd=tmp_path)
    assert run.rc == 0, run.err[-3000:]
    html = tmp_path / "r.html"
    run = flawscope("evaluate", out, labelled, "--report", html, cwd=tmp_path)
    assert run.rc == 0, run.err[-3000:]  # a classifier gives no maps: the report must not expect them
    assert 'id="categories"' in html.read_text() and 'id="segmentation"' not in html.read_text()


def test_a_model_without_good_parts_is_not_calibrated(labelled: Path, tmp_path: Path):
    # Defect types only (e.g. sorting steel defects): the defect score is 1 for every part, and a
    # threshold "calibrated" on defect images would pass them all.
    data = tmp_path / "types"
    shutil.copytree(labelled, data)
    for side in ("train", "test"):
        shutil.rmtree(data / side / "good")
    out = tmp_path / "types-bundle"
    run = flawscope("train", data, "-o", out, "--task", "classify", *FAST, cwd=tmp_path)
    assert run.rc == 0, run.err[-3000:]
    run = flawscope("calibrate", out, data / "test" / "spot", cwd=tmp_path)
    assert run.rc == 2 and len(run.error_lines) == 1 and "without good parts" in run.error_lines[0]
    assert "--reject" in run.error_lines[0]
    # A sorter gets its threshold by hand: every part then fails, with its category.
    mistakes = [
        (("--reject", "-1"), "--reject"),
        (("--reject", "0.5", "--review-threshold", "0.9"), "--review-threshold"),
        (("--reject", "0.5", str(data / "test")), "--reject"),
    ]
    for bad, named in mistakes:
        run = flawscope("calibrate", out, *bad, cwd=tmp_path)
        assert run.rc == 2 and len(run.error_lines) == 1 and named in run.error_lines[0], run.err
    run = flawscope("calibrate", out, "--reject", "0.5", cwd=tmp_path)
    assert run.rc == 0 and "set by hand" in run.out, run.err
    from flawscope.bundle import read_bundle

    active = read_bundle(out).manifest.select_thresholds()
    assert active is not None and active.reject == 0.5 and active.method == "explicit" and active.version == 1
    run = flawscope("evaluate", out, data, cwd=tmp_path)
    assert run.rc == 0 and "recall on defective test parts" in run.out and "100.00%" in run.out, run.err


def test_a_model_of_another_task_is_refused_naming_the_choices(labelled: Path, tmp_path: Path):
    run = flawscope(
        "train",
        labelled,
        "-o",
        tmp_path / "b",
        "--task",
        "detect",
        "--model",
        "classifier",
        *FAST,
        cwd=tmp_path,
    )
    assert run.rc == 2 and "Traceback" not in run.err
    assert "--model" in run.error_lines[0] and "box_detector" in run.error_lines[0]
    assert not (tmp_path / "b").exists()


def test_station_keeps_the_anomaly_head_named_by_param(labelled: Path, tmp_path: Path):
    # --station means PaDiM only when --param names no head: a named one reaches the checks (a
    # bad name is refused naming the field, so it was not replaced by 'padim').
    run = flawscope(
        "train", labelled, "-o", tmp_path / "b", "--task", "segment", "--station", *FAST,
        "--param", "anomaly=knn", cwd=tmp_path,
    )  # fmt: skip
    assert run.rc == 2 and "Traceback" not in run.err
    assert "anomaly" in run.error_lines[0] and "patchcore" in run.error_lines[0]
    assert not (tmp_path / "b").exists()


def test_a_fine_tuned_classifier_from_the_command_line(labelled: Path, tmp_path: Path):
    from flawscope.bundle import read_bundle

    out = tmp_path / "tuned"
    run = flawscope(
        "train", labelled, "-o", out, "--task", "classify", *FAST,
        "--param", "finetune=last", "--param", "finetune_epochs=1", cwd=tmp_path,
    )  # fmt: skip
    assert run.rc == 0, run.err[-3000:]
    assert "trunk fine-tuned (last)" in run.out
    manifest = read_bundle(out).manifest
    assert manifest.model.hyperparameters["finetune"] == "last"
    assert manifest.training is not None and manifest.training.log is not None
    assert manifest.training.log["finetune"]["epochs_run"] == 1


def test_a_box_detector_says_when_its_box_head_stopped(tmp_path: Path):
    import cv2
    import numpy as np

    # NEU's layout: defect classes only, splits.csv, VOC boxes around bright rectangles.
    root = tmp_path / "neu"
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    rng = np.random.default_rng(0)
    rows = ["path,class,split"]
    for cls, value in (("crazing", 200), ("patches", 30)):
        for i in range(10):
            name = f"{cls}_{i}"
            image = rng.normal(120, 8, (64, 64)).clip(0, 255).astype(np.uint8)
            x, y = int(rng.integers(4, 30)), int(rng.integers(4, 30))
            image[y : y + 20, x : x + 24] = value
            cv2.imwrite(str(root / "images" / f"{name}.png"), image)
            (root / "annotations" / f"{name}.xml").write_text(
                f"<annotation><object><name>{cls}</name><bndbox><xmin>{x}</xmin><ymin>{y}</ymin>"
                f"<xmax>{x + 24}</xmax><ymax>{y + 20}</ymax></bndbox></object></annotation>"
            )
            rows.append(f"images/{name}.png,{cls},{'test' if i >= 8 else 'train'}")
    (root / "splits.csv").write_text("\n".join(rows) + "\n")
    run = flawscope(
        "train", root / "splits.csv", "--task", "detect", "-o", tmp_path / "det", "--image-size", "64",
        "--param", "epochs=3", "--param", "views=0", "--param", "box_epochs=4", cwd=tmp_path,
    )  # fmt: skip
    assert run.rc == 0, run.err[-3000:]
    row = next(line for line in run.out.splitlines() if "box head: epochs (best)" in line)
    assert " of 4 (" in row
    # Its report has the detection's average precision, as the command's table does.
    run = flawscope(
        "evaluate", tmp_path / "det", root / "splits.csv", "--report", tmp_path / "r.html", cwd=tmp_path
    )
    assert run.rc == 0, run.err[-3000:]
    twin = json.loads((tmp_path / "r.json").read_text())
    html = (tmp_path / "r.html").read_text()
    assert twin["detection"]["iou"] == 0.5 and set(twin["detection"]["ap"]) == {"crazing", "patches"}
    assert 'id="detection"' in html and f"{twin['detection']['map']:.3f}" in html

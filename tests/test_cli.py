"""The ``flawscope`` command line as a user runs it: real subprocesses, real files, small generated data.

One bundle goes through train (with a calibration hold-out), calibrate, evaluate and export;
the error tests check that every user mistake ends in exit code 2 and one ``error:`` line that
names the file or field, never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from flawscope.bundle import read_bundle
from flawscope.data.synthetic import SyntheticSpec, write_dataset

IMAGE_SIZE = "64"


@dataclass(frozen=True)
class Run:
    rc: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]


def flawscope(*args: object, cwd: Path) -> Run:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR")}
    done = subprocess.run(
        [sys.executable, "-m", "flawscope.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def assert_user_error(run: Run, *fragments: str) -> str:
    """Exit code 2, no traceback, exactly one error line holding every fragment; returns that line."""
    text = run.out + run.err
    assert "Traceback" not in text, text
    assert run.rc == 2, text
    assert len(run.error_lines) == 1, run.err
    line = run.error_lines[0]
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


# --- data -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


# Unusable training files and the words their reported problem must contain.
CORRUPT = {"garbage [b].png": "not a readable image", "truncated.png": "truncated", "tiny.png": "1x1"}


def _write_corrupt_files(folder: Path) -> None:
    (folder / "garbage [b].png").write_bytes(b"this is not an image at all")  # "[b]" is Rich markup
    (folder / "truncated.png").write_bytes((folder / "000.png").read_bytes()[:300])
    Image.new("L", (1, 1)).save(folder / "tiny.png")


@pytest.fixture(scope="module")
def dataset(work: Path) -> Path:
    """36 good training parts and 3 unusable files (sorted last, so outside the hold-out)."""
    # A 0.3 hold-out of the 39 training files is 11 good images: calibration needs 10.
    spec = SyntheticSpec(size=(64, 64), n_train=36, n_test_good=6, n_test_defect_per_type=2, seed=0)
    root = Path(write_dataset(work / "parts", spec).root)
    _write_corrupt_files(root / "train" / "good")
    return root


@pytest.fixture(scope="module")
def good_images(work: Path) -> Path:
    """A folder of 12 good parts not used in training, for 'flawscope calibrate'."""
    spec = SyntheticSpec(size=(64, 64), n_train=12, n_test_good=0, n_test_defect_per_type=0, seed=7)
    return Path(write_dataset(work / "more-good", spec).root) / "train" / "good"


# --- the whole job on one bundle ----------------------------------------------------------------


@dataclass(frozen=True)
class Pipeline:
    bundle: Path
    deploy: Path
    json_out: Path
    train: Run
    calibrate: Run
    evaluate: Run
    export: Run
    after_train: dict
    after_calibrate: dict
    after_evaluate: dict


@pytest.fixture(scope="module")
def pipeline(work: Path, dataset: Path, good_images: Path) -> Pipeline:
    bundle, deploy, json_out = work / "bundle", work / "deploy", work / "reports" / "metrics.json"
    trained = flawscope(
        "train", dataset, "-o", bundle, "--image-size", IMAGE_SIZE, "--holdout", "0.3", cwd=work
    )
    assert trained.rc == 0, trained.err
    after_train = _manifest(bundle)
    calibrated = flawscope("calibrate", bundle, good_images, "--target-frr", "0.1", cwd=work)
    assert calibrated.rc == 0, calibrated.err
    after_calibrate = _manifest(bundle)
    evaluated = flawscope("evaluate", bundle, dataset, "--json", json_out, cwd=work)
    assert evaluated.rc == 0, evaluated.err
    after_evaluate = _manifest(bundle)
    exported = flawscope("export", bundle, "-o", deploy, "--int8", cwd=work)
    assert exported.rc == 0, exported.err
    return Pipeline(
        bundle,
        deploy,
        json_out,
        trained,
        calibrated,
        evaluated,
        exported,
        after_train,
        after_calibrate,
        after_evaluate,
    )


def test_models_lists_models_and_backbones(work: Path):
    run = flawscope("models", cwd=work)
    assert run.rc == 0, run.err
    for name in ("padim", "patchcore", "efficientnet_lite0", "mobilenet_v2", "resnet18", "wide_resnet50_2"):
        assert name in run.out
    # Each model with the task it learns ('train --task'), the good-parts models first.
    cells = [[c.strip() for c in line.split("│")] for line in run.out.splitlines() if line.count("│") >= 4]
    rows = {c[1]: c[2] for c in cells if c[1] and c[2]}
    assert rows["padim"] == "anomaly" and rows["segmenter"] == "segment" and rows["box_detector"] == "detect"
    assert run.out.index("patchcore") < run.out.index("classifier")
    assert "Traceback" not in run.err


def test_train_writes_a_self_describing_bundle_without_pickle(pipeline: Pipeline, dataset: Path):
    assert {p.name for p in pipeline.bundle.iterdir()} >= {"manifest.json", "model.safetensors"}
    pickles = [
        p for p in pipeline.bundle.rglob("*") if p.suffix in (".pkl", ".pickle", ".pt", ".pth", ".joblib")
    ]
    assert pickles == []
    header = (pipeline.bundle / "model.safetensors").read_bytes()[:9]
    assert header[8:9] == b"{"  # safetensors: 8-byte header length, then a JSON header

    m = pipeline.after_train
    assert m["model"]["name"] == "padim"
    assert m["model"]["hyperparameters"]["image_size"] == 64
    assert m["backbone"]["name"] == "efficientnet_lite0"
    # The published hash of the packaged EfficientNet-Lite0 weights.
    assert (
        m["backbone"]["weights_sha256"] == "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    )
    assert (m["preprocessing"]["height"], m["preprocessing"]["width"]) == (64, 64)
    assert {"flawscope", "python", "torch", "numpy"} <= set(m["versions"])
    assert set(m["files"]) == {"model.safetensors"}

    # 39 files, 11 held out, 3 unusable: 25 fitted. (The hash itself is checked in models/test_train.py.)
    assert m["training"]["n_images"] == 25
    assert len(m["training"]["file_list_sha256"]) == 64
    assert m["training"]["dataset"] == str(dataset)


def test_train_with_holdout_calibrates_threshold_version_1(pipeline: Pipeline):
    m = pipeline.after_train
    holdout = m["training"]["holdout"]
    assert holdout["fraction"] == 0.3
    assert holdout["n_images"] == 11
    assert len(holdout["file_list_sha256"]) == 64
    assert holdout["file_list_sha256"] != m["training"]["file_list_sha256"]

    [thresholds] = m["thresholds"]
    assert thresholds["version"] == 1
    assert thresholds["method"] == "calibrated"
    assert thresholds["n_calibration"] == 11
    assert thresholds["target_frr"] == 0.01
    assert thresholds["reject"] > 0
    assert "Calibrated thresholds (version 1)" in pipeline.train.out


def test_calibrate_adds_version_2_and_keeps_version_1(pipeline: Pipeline):
    before, after = pipeline.after_train["thresholds"], pipeline.after_calibrate["thresholds"]
    assert [t["version"] for t in after] == [1, 2]
    assert after[0] == before[0]
    assert after[1]["n_calibration"] == 12
    assert after[1]["target_frr"] == 0.1
    assert after[1]["reject"] != before[0]["reject"]
    assert "version 2" in pipeline.calibrate.out
    # Everything else in the bundle is what training wrote.
    assert pipeline.after_calibrate["files"] == pipeline.after_train["files"]
    assert pipeline.after_calibrate["training"] == pipeline.after_train["training"]


def test_evaluate_prints_the_table_writes_json_and_stores_metrics(pipeline: Pipeline):
    out = pipeline.evaluate.out
    # Column headers are two short lines each ("image" over "AUROC") so the table fits 80 columns.
    for text in ("image", "pixel", "AUROC", "AU-PRO", "all", "crack", "contamination", "version 2"):
        assert text in out, text

    report = json.loads(pipeline.json_out.read_text())
    overall = report["metrics"]["overall"]
    assert 0.0 <= overall["image_auroc"] <= 1.0
    assert 0.0 <= overall["pixel_auroc"] <= 1.0
    assert (overall["n_good"], overall["n_defect"]) == (6, 10)
    assert set(report["metrics"]["per_type"]) == {"contamination", "crack", "missing", "scratch", "spot"}
    assert report["n_images"] == 16
    assert report["operating_point"]["threshold_version"] == 2

    stored = pipeline.after_evaluate["metrics"]
    assert stored["metrics"]["overall"]["image_auroc"] == overall["image_auroc"]
    assert stored["dataset"].endswith("parts")
    assert pipeline.after_evaluate["thresholds"] == pipeline.after_calibrate["thresholds"]


def test_bundle_still_verifies_after_every_step(pipeline: Pipeline):
    bundle = read_bundle(pipeline.bundle)
    assert bundle.manifest.to_dict()["metrics"] == pipeline.after_evaluate["metrics"]
    deploy = read_bundle(pipeline.deploy).manifest.deploy
    assert deploy is not None and deploy.graph == "model.onnx"


def test_export_writes_fp32_and_int8_graphs(pipeline: Pipeline):
    import onnxruntime as ort

    deployed = read_bundle(pipeline.deploy)
    assert set(deployed.manifest.files) == {"model.onnx", "model.int8.onnx"}
    assert deployed.manifest.deploy is not None
    assert deployed.manifest.deploy.graph_int8 == "model.int8.onnx"
    assert deployed.manifest.thresholds.to_list() == pipeline.after_evaluate["thresholds"]
    assert deployed.model_hash == pipeline.after_train["model_hash"]
    for name in ("model.onnx", "model.int8.onnx"):
        session = ort.InferenceSession(str(pipeline.deploy / name), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].shape[1:] == [3, 64, 64]
    assert "model.int8.onnx" in pipeline.export.out


# --- training on bad data -------------------------------------------------------------------------


def test_train_skips_corrupt_files_and_lists_them_at_the_end(pipeline: Pipeline, dataset: Path):
    # The pipeline's dataset holds 3 unusable files: training succeeded (rc 0 in the fixture).
    run = pipeline.train
    assert "Traceback" not in run.out + run.err
    lines = run.err.splitlines()
    summary = next(i for i, line in enumerate(lines) if "3 file(s) skipped" in line)
    listed = lines[summary + 1 :]
    assert len(listed) == 3, run.err
    for name, problem in CORRUPT.items():
        [line] = [line for line in listed if f"{dataset / 'train' / 'good' / name}:" in line]
        assert problem in line

    skipped = pipeline.after_train["training"]["skipped"]
    assert sorted(Path(s["path"]).name for s in skipped) == sorted(CORRUPT)
    # Export --int8 calibrated on the training images went past them too.
    assert "3 file(s) skipped" in pipeline.export.err


def test_train_on_only_corrupt_images(work: Path, tmp_path: Path):
    good = tmp_path / "all-bad" / "train" / "good"
    good.mkdir(parents=True)
    for i in range(3):
        (good / f"{i:03d}.png").write_bytes(b"\x89PNG broken")
    run = flawscope("train", tmp_path / "all-bad", "-o", tmp_path / "out", cwd=work)
    assert_user_error(run, "none of the 3 training images could be read", str(tmp_path / "all-bad"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("case", "fragments"),
    [
        ("missing", ["does not exist"]),
        ("not-a-dataset", ["not a dataset"]),
        ("empty-good", ["training folder has no images", "train/good"]),
    ],
)
def test_train_on_something_that_is_not_a_dataset(
    work: Path, tmp_path: Path, case: str, fragments: list[str]
):
    data = tmp_path / case
    if case == "not-a-dataset":
        (data / "notes").mkdir(parents=True)
        (data / "readme.txt").write_text("hello")
    elif case == "empty-good":
        (data / "train" / "good").mkdir(parents=True)
    run = flawscope("train", data, "-o", tmp_path / "out", cwd=work)
    assert_user_error(run, case, *fragments)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("option", "fragments"),
    [
        (["--model", "nope"], ["model", "'nope'", "padim", "patchcore"]),
        (["--backbone", "nope"], ["backbone", "'nope'", "efficientnet_lite0"]),
        (["--param", "aggregate3"], ["--param", "'aggregate3'", "KEY=VALUE"]),
    ],
)
def test_train_with_bad_options(
    work: Path, dataset: Path, tmp_path: Path, option: list[str], fragments: list[str]
):
    run = flawscope("train", dataset, "-o", tmp_path / "out", "--image-size", IMAGE_SIZE, *option, cwd=work)
    assert_user_error(run, *fragments)
    assert not (tmp_path / "out").exists()


def test_train_refuses_to_overwrite_a_bundle_or_other_folder(work: Path, dataset: Path, pipeline: Pipeline):
    before = (pipeline.bundle / "manifest.json").read_bytes()
    run = flawscope("train", dataset, "-o", pipeline.bundle, "--image-size", IMAGE_SIZE, cwd=work)
    assert_user_error(run, str(pipeline.bundle), "already holds a bundle", "--overwrite")
    assert (pipeline.bundle / "manifest.json").read_bytes() == before

    run = flawscope("train", dataset, "-o", dataset, cwd=work)
    assert_user_error(run, str(dataset), "not a bundle")
    assert not (dataset / "manifest.json").exists()


def test_usage_error_is_exit_code_2_without_traceback(work: Path, dataset: Path):
    run = flawscope("train", dataset, cwd=work)  # no -o
    assert run.rc == 2
    assert "Traceback" not in run.out + run.err
    assert "--output" in run.err


# --- calibrate, evaluate, export: bad input ----------------------------------------------------------


def test_calibrate_with_too_few_images(work: Path, pipeline: Pipeline, dataset: Path):
    folder = dataset / "test" / "good"  # 6 images
    before = (pipeline.bundle / "manifest.json").read_bytes()
    run = flawscope("calibrate", pipeline.bundle, folder, cwd=work)
    assert_user_error(run, str(folder), "6 readable good image(s)", "at least 10")
    assert (pipeline.bundle / "manifest.json").read_bytes() == before


def test_calibrate_with_an_impossible_target(work: Path, pipeline: Pipeline, good_images: Path):
    before = (pipeline.bundle / "manifest.json").read_bytes()
    run = flawscope("calibrate", pipeline.bundle, good_images, "--target-frr", "0.7", cwd=work)
    assert_user_error(run, "target_frr", "0.7", "(0, 0.5)")
    assert (pipeline.bundle / "manifest.json").read_bytes() == before


def test_evaluate_without_a_test_split(work: Path, pipeline: Pipeline, tmp_path: Path, dataset: Path):
    shutil.copytree(dataset / "train", tmp_path / "train-only" / "train")
    run = flawscope("evaluate", pipeline.bundle, tmp_path / "train-only", cwd=work)
    assert_user_error(run, "train-only", "no test images")


def _copy_bundle(pipeline: Pipeline, target: Path) -> Path:
    return Path(shutil.copytree(pipeline.bundle, target))


def _raise_threshold(bundle: Path) -> None:
    manifest = _manifest(bundle)
    manifest["thresholds"][-1]["reject"] *= 10
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))


def _flip_a_weight_byte(bundle: Path) -> None:
    path = bundle / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("tamper", "file", "problem"),
    [
        (_raise_threshold, "manifest.json", "manifest was altered"),
        (_flip_a_weight_byte, "model.safetensors", "file was altered"),
        (lambda b: (b / "model.safetensors").unlink(), "model.safetensors", "missing"),
    ],
)
@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_tampered_bundle_is_refused_naming_the_file(
    work: Path,
    pipeline: Pipeline,
    dataset: Path,
    tmp_path: Path,
    tamper,
    file: str,
    problem: str,
    command: str,
):
    bundle = _copy_bundle(pipeline, tmp_path / "copy")
    tamper(bundle)
    args = [bundle, dataset] if command == "evaluate" else [bundle, "-o", tmp_path / "deploy"]
    run = flawscope(command, *args, cwd=work)
    assert_user_error(run, str(bundle / file), problem)
    assert not (tmp_path / "deploy").exists()


def test_export_of_a_folder_that_is_not_a_bundle(work: Path, dataset: Path, tmp_path: Path):
    run = flawscope("export", dataset, "-o", tmp_path / "deploy", cwd=work)
    assert_user_error(run, str(dataset), "not a bundle", "manifest.json")
    assert not (tmp_path / "deploy").exists()

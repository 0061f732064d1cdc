"""What a bundle knows about its training files, and the calibration checks built on it."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flawscope.bundle import read_bundle, update_manifest
from flawscope.data.synthetic import SyntheticSpec, write_dataset
from flawscope.decide.workflow import calibrate_bundle
from flawscope.errors import InputError
from flawscope.models import get_model_class, load_model, save_model
from flawscope.models.provenance import (
    calibration_samples,
    holdout_samples,
    training_overlap,
)
from flawscope.models.train import train

SMALL = {"image_size": 64, "batch_size": 8}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("provenance")
    spec = SyntheticSpec(size=(64, 64), n_train=30, n_test_good=2, n_test_defect_per_type=1, seed=5)
    data = Path(write_dataset(root / "data", spec).root)
    train(data, root / "bundle", holdout=0.4, params=SMALL)
    return data, root / "bundle"


def test_overlap_is_found_by_content_and_unknown_for_old_bundles(trained, tmp_path: Path):
    data, bundle = trained
    manifest = read_bundle(bundle).manifest
    fitted = [data / f.path for f in manifest.training.files]
    held = [data / f.path for f in manifest.training.holdout.files]
    assert not training_overlap(manifest, held)
    copy = tmp_path / "renamed.png"
    shutil.copy(fitted[0], copy)
    overlap = training_overlap(manifest, [*held[:3], copy])
    assert overlap and overlap.files == ((str(copy), manifest.training.files[0].path),)
    assert overlap.checked == 4
    # A bundle from before per-file records does not know: no claim either way.
    old = replace(manifest, training=replace(manifest.training, files=()))
    assert training_overlap(old, fitted) is None


def test_holdout_of_an_old_bundle_repeats_the_split_and_checks_its_digest(trained, tmp_path: Path):
    data, bundle = trained
    copy = Path(shutil.copytree(bundle, tmp_path / "old"))
    training = read_bundle(copy).manifest.training
    old = replace(training, files=(), holdout=replace(training.holdout, files=()))
    update_manifest(read_bundle(copy), training=old)
    manifest = read_bundle(copy).manifest
    expected = sorted(str(data / f.path) for f in training.holdout.files)
    assert sorted(s.path for s in holdout_samples(manifest, data)) == expected
    # Another dataset's files do not pass for the hold-out.
    other = Path(write_dataset(tmp_path / "other", SyntheticSpec(size=(64, 64), n_train=30, seed=6)).root)
    with pytest.raises(InputError, match="not the ones this bundle was trained"):
        holdout_samples(manifest, other)


def test_calibration_samples_of_folders_and_datasets(trained, tmp_path: Path):
    data, _ = trained
    flat, where = calibration_samples(data / "train" / "good")
    assert len(flat) == 30 and where == str(data / "train" / "good")
    from_dataset, where = calibration_samples(data)
    assert [s.path for s in from_dataset] == [s.path for s in flat] and "good images of the dataset" in where
    plain = tmp_path / "plain"
    shutil.copytree(data / "train" / "good", plain / "ok")
    shutil.copytree(data / "test" / "crack", plain / "crack")
    samples, where = calibration_samples(plain)
    assert len(samples) == 30 and where.startswith(str(plain / "ok"))
    (tmp_path / "nothing" / "sub").mkdir(parents=True)
    with pytest.raises(InputError, match="no train/good/ or good/ folder"):
        calibration_samples(tmp_path / "nothing")


def test_a_model_fitted_on_paths_equals_one_fitted_on_arrays_and_records_its_files(trained, tmp_path: Path):
    data, bundle = trained
    manifest = read_bundle(bundle).manifest
    paths = [str(data / f.path) for f in manifest.training.files[:10]]
    arrays = [np.asarray(Image.open(p)) for p in paths]
    cls = get_model_class("padim")
    by_path, by_array = cls(**SMALL).fit(paths), cls(**SMALL).fit(arrays)
    tests = [str(data / f.path) for f in manifest.training.holdout.files[:4]]
    scores = by_path.predict(tests).scores
    np.testing.assert_allclose(
        scores, by_array.predict([np.asarray(Image.open(p)) for p in tests]).scores, rtol=1e-5
    )
    assert by_path.training_files_ == paths and by_array.training_files_ is None

    saved = save_model(by_path, tmp_path / "python-bundle")
    files = saved.manifest.training.files
    assert len(files) == 10 and {Path(f.path).name for f in files} == {Path(p).name for p in paths}
    model, _ = load_model(saved.path)
    np.testing.assert_allclose(model.predict(tests).scores, scores, rtol=1e-5)
    # Calibrating the Python-made bundle on its own training files is refused, as on the CLI.
    with pytest.raises(InputError, match="10 of 10 calibration images were used to train"):
        calibrate_bundle(saved.path, paths, target_frr=0.1)
    result = calibrate_bundle(saved.path, paths, target_frr=0.1, allow_training_images=True)
    assert any("used to train" in w for w in result.warnings)
    stored = json.loads((saved.path / "manifest.json").read_text())["calibration"]
    assert stored["n_training_images"] == 10


def test_a_bad_path_is_named(trained, tmp_path: Path):
    data, _ = trained
    cls = get_model_class("padim")
    (tmp_path / "broken.png").write_bytes(b"nope")
    with pytest.raises(InputError, match=r"broken\.png"):
        cls(**SMALL).fit([data / "train" / "good" / "000.png", tmp_path / "broken.png"])
    with pytest.raises(InputError, match="a single one"):
        cls(**SMALL).fit(str(data / "train" / "good" / "000.png"))  # type: ignore[arg-type]

"""Training from a dataset folder: hold-out split, training-set identity, checks before any fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flawscope.bundle import read_bundle
from flawscope.data.datasets import load_dataset
from flawscope.data.synthetic import SyntheticSpec, write_dataset
from flawscope.errors import InputError
from flawscope.models.io import load_model
from flawscope.models.padim import PaDiM
from flawscope.models.train import check_params, file_list_hash, split_holdout, train

SMALL = {"image_size": 64, "batch_size": 8}


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train-data")
    spec = SyntheticSpec(size=(64, 64), n_train=24, n_test_good=2, n_test_defect_per_type=1, seed=3)
    return Path(write_dataset(root, spec).root)


def _copy_dataset(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


def test_split_holdout_is_deterministic_disjoint_and_sized(dataset_root: Path):
    samples = load_dataset(dataset_root).train
    fit, held = split_holdout(list(reversed(samples)), 0.25)

    assert len(held) == int(len(samples) * 0.25)
    assert {s.path for s in fit}.isdisjoint(s.path for s in held)
    assert {s.path for s in fit} | {s.path for s in held} == {s.path for s in samples}
    # Same split whatever order the samples come in.
    assert split_holdout(samples, 0.25) == (fit, held)
    # Spread over the whole sorted list, not the first few files.
    ordered = sorted(s.path for s in samples)
    positions = [ordered.index(s.path) for s in held]
    assert max(positions) > len(ordered) / 2


@pytest.mark.parametrize("fraction", [-0.1, 0.9, 1.0, float("nan")])
def test_split_holdout_refuses_bad_fractions(dataset_root: Path, fraction: float):
    with pytest.raises(InputError, match="holdout"):
        split_holdout(load_dataset(dataset_root).train, fraction)


def test_file_list_hash_changes_when_a_training_file_changes(dataset_root: Path, tmp_path: Path):
    root = _copy_dataset(dataset_root, tmp_path / "copy")
    before = file_list_hash(load_dataset(root).train, str(root))
    # Moving the dataset elsewhere keeps its identity (relative paths are hashed).
    assert before == file_list_hash(load_dataset(dataset_root).train, str(dataset_root))

    target = sorted((root / "train" / "good").iterdir())[5]
    image = np.asarray(Image.open(target)).copy()
    image[0, 0] ^= 1
    Image.fromarray(image).save(target)
    changed = file_list_hash(load_dataset(root).train, str(root))
    assert changed != before

    target.rename(target.with_name("renamed.png"))
    assert file_list_hash(load_dataset(root).train, str(root)) not in (before, changed)


def test_check_params_names_the_bad_hyperparameter():
    check_params(PaDiM, {"image_size": 64, "epsilon": 1, "n_features": 20, "canvas": [64, 96]})
    with pytest.raises(InputError, match=r"params: unknown hyperparameter\(s\) colour for padim"):
        check_params(PaDiM, {"colour": 1})
    with pytest.raises(InputError, match=r"params\.aggregate: must be of type int"):
        check_params(PaDiM, {"aggregate": "abc"})
    with pytest.raises(InputError, match=r"params\.batch_size: must be of type int"):
        check_params(PaDiM, {"batch_size": True})
    with pytest.raises(InputError, match=r"params\.epsilon: must be of type float"):
        check_params(PaDiM, {"epsilon": "0.1"})


def test_train_with_holdout_writes_a_loadable_bundle(dataset_root: Path, tmp_path: Path):
    progress: list[tuple[str, int, int]] = []
    result = train(
        dataset_root, tmp_path / "bundle", holdout=0.5, params=SMALL, progress=lambda *a: progress.append(a)
    )

    dataset = load_dataset(dataset_root)
    fit, held = split_holdout(dataset.train, 0.5)
    assert result.n_train == len(fit) == 12
    assert result.holdout_paths == [s.path for s in held]
    assert len(result.holdout_images) == 12 and result.skipped == []
    assert progress[-1] == ("features", 12, 12)

    training = read_bundle(result.bundle.path).manifest.training
    assert training.n_images == 12
    assert training.file_list_sha256 == file_list_hash(fit, dataset.root)
    assert training.holdout.file_list_sha256 == file_list_hash(held, dataset.root)
    assert training.holdout.n_images == 12

    model, bundle = load_model(result.bundle.path)
    assert bundle.model_hash == result.bundle.model_hash
    scores = model.predict(result.holdout_images[:2]).scores
    np.testing.assert_allclose(scores, result.model.predict(result.holdout_images[:2]).scores, rtol=1e-5)


def test_mistakes_are_refused_before_reading_or_fitting(dataset_root: Path, tmp_path: Path):
    # A dataset whose images are all unreadable: a wrong model or parameter must be reported
    # first (no image read, no bundle written), not "none of the images could be read".
    broken = tmp_path / "broken"
    (broken / "train" / "good").mkdir(parents=True)
    for i in range(3):
        (broken / "train" / "good" / f"{i}.png").write_bytes(b"not an image")

    with pytest.raises(InputError, match="unknown model 'nope'"):
        train(broken, tmp_path / "b1", model="nope")
    with pytest.raises(InputError, match="unknown backbone 'nope'"):
        train(broken, tmp_path / "b2", params={"backbone": "nope"})
    with pytest.raises(InputError, match="params: unknown hyperparameter"):
        train(broken, tmp_path / "b3", params={"colour": 1})
    with pytest.raises(InputError, match=r"none of the 3 training images could be read \(e\.g\. .*0\.png"):
        train(broken, tmp_path / "b4", params=SMALL)
    # 0.3 of 24 holds out 7 images: too few to calibrate, refused before the fit.
    with pytest.raises(InputError, match="holds out 7, but calibration needs at least 10"):
        train(dataset_root, tmp_path / "b5", holdout=0.3, params=SMALL)
    assert not any((tmp_path / f"b{i}").exists() for i in range(1, 6))

"""Shared fixtures: small synthetic datasets the project generates itself, and the real-data path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def shared_dataset(name: str) -> Path:
    """Path of a real dataset in ../shared/datasets, or skip the test with the reason."""
    path = SHARED / name
    if not (path / "manifest.csv").is_file():
        pytest.skip(
            f"real dataset {name!r} not found at {path} (it lives in ../shared/datasets beside the repo)"
        )
    return path


@pytest.fixture(scope="session")
def tiny_parts() -> dict[str, list[np.ndarray]]:
    """A few small generated parts: good training images, good test images and defective ones with masks."""
    from flawscope.data.synthetic import SyntheticSpec, add_defect, make_part

    rng = np.random.default_rng(0)
    spec = SyntheticSpec(texture="brushed_metal", size=(96, 128), seed=0)
    train = [make_part(rng, spec) for _ in range(12)]
    good = [make_part(rng, spec) for _ in range(4)]
    bad, masks = [], []
    for kind in ("scratch", "spot", "contamination", "missing"):
        image, mask = add_defect(make_part(rng, spec), kind, rng)
        bad.append(image)
        masks.append(mask)
    return {"train": train, "good": good, "bad": bad, "masks": masks}


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory):
    """An MVTec-layout synthetic dataset on disk (small)."""
    from flawscope.data.synthetic import SyntheticSpec, write_dataset

    root = tmp_path_factory.mktemp("synthetic")
    spec = SyntheticSpec(size=(128, 128), n_train=24, n_test_good=10, n_test_defect_per_type=3, seed=1)
    return write_dataset(root, spec)


MADE = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    """Give the test session its own signing key store and bundle cache, never the user's.

    Subprocesses, Ray's workers included, inherit both through the environment.
    """
    import os
    import tempfile

    from flawscope.reinspect.bundle_cache import CACHE_ENV
    from flawscope.signing.keys import ENV_VAR

    keys = tempfile.mkdtemp(prefix="flawscope-test-keys-")
    bundles = tempfile.mkdtemp(prefix="flawscope-test-bundles-")
    config.stash[MADE] = [keys, bundles]
    os.environ[ENV_VAR] = keys
    os.environ[CACHE_ENV] = bundles


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the folders this process made (each xdist worker makes its own)."""
    import shutil

    for made in config.stash.get(MADE, []):
        shutil.rmtree(made, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_labelled() -> dict:
    """Small generated labelled parts: good ones, and two defect classes with masks and boxes."""
    from flawscope.data.synthetic import SyntheticSpec, add_defect, make_part

    rng = np.random.default_rng(1)
    spec = SyntheticSpec(texture="brushed_metal", size=(64, 80), seed=1)
    good = [make_part(rng, spec) for _ in range(14)]
    good_test = [make_part(rng, spec) for _ in range(4)]
    defects, classes, masks, boxes = [], [], [], []
    for index in range(20):
        kind = ("scratch", "spot")[index % 2]
        image, mask = add_defect(make_part(rng, spec), kind, rng)
        ys, xs = np.nonzero(mask)
        defects.append(image)
        classes.append(kind)
        masks.append(mask)
        boxes.append(((float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1), kind),))
    train_bad, test_bad = slice(0, 16), slice(16, 20)
    return {
        "good": good,
        "good_test": good_test,
        "images": [*good, *defects[train_bad]],
        "classes": tuple(["good"] * len(good) + classes[train_bad]),
        "masks": tuple([np.zeros(g.shape[:2], bool) for g in good] + masks[train_bad]),
        "boxes": tuple([()] * len(good) + boxes[train_bad]),
        "bad": defects[test_bad],
        "bad_masks": masks[test_bad],
        "bad_classes": classes[test_bad],
    }

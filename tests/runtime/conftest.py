"""One tiny padim bundle (64 px), trained, calibrated and exported once per session for the runtime tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

CANVAS = 64


@dataclass(frozen=True)
class Deployed:
    """The deployable bundle and images to inspect with it.

    Attributes:
        path: deployable bundle folder (fp32 graph, calibrated thresholds).
        trained: the trained bundle it was exported from.
        good: good test images.
        defective: defective test images.
    """

    path: Path
    trained: Path
    good: list[np.ndarray]
    defective: list[np.ndarray]


@pytest.fixture(scope="session")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Deployed:
    import torch

    from flawscope.data.datasets import read_samples
    from flawscope.data.synthetic import SyntheticSpec, write_dataset
    from flawscope.decide.workflow import calibrate_bundle
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.train import train

    torch.set_num_threads(2)
    folder = tmp_path_factory.mktemp("runtime")
    spec = SyntheticSpec(size=(CANVAS, CANVAS), n_train=40, n_test_good=6, n_test_defect_per_type=1, seed=2)
    dataset = write_dataset(folder / "data", spec)
    result = train(dataset, folder / "trained", model="padim", holdout=0.25, params={"image_size": CANVAS})
    calibrate_bundle(folder / "trained", result.holdout_images, target_frr=0.1)
    export_bundle(folder / "trained", folder / "deployed")
    good = read_samples(dataset.test_good, masks=False).images
    defective = read_samples(dataset.test_defect, masks=False).images
    return Deployed(folder / "deployed", folder / "trained", list(good), list(defective))


@pytest.fixture
def bundle_copy(deployed: Deployed, tmp_path: Path) -> Path:
    """A private copy of the deployable bundle, for tests that damage it."""
    import shutil

    return Path(shutil.copytree(deployed.path, tmp_path / "bundle"))

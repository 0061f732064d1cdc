"""A small deployable bundle calibrated on 40 held-out good parts (so it carries a monitoring reference)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

CANVAS = 64


@dataclass(frozen=True)
class Calibrated:
    """The bundles and the images of the monitoring tests.

    Attributes:
        dataset: the synthetic dataset folder (MVTec layout).
        trained: trained and calibrated bundle.
        deployed: the exported bundle.
        good: good test images.
    """

    dataset: Path
    trained: Path
    deployed: Path
    good: list[np.ndarray]


@pytest.fixture(scope="session")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Calibrated:
    import torch

    from flawscope.data.datasets import read_samples
    from flawscope.data.synthetic import SyntheticSpec, write_dataset
    from flawscope.decide.workflow import calibrate_bundle
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.train import train

    torch.set_num_threads(2)
    folder = tmp_path_factory.mktemp("monitor")
    spec = SyntheticSpec(size=(CANVAS, CANVAS), n_train=100, n_test_good=20, n_test_defect_per_type=2, seed=5)
    dataset = write_dataset(folder / "data", spec)
    result = train(dataset, folder / "trained", model="padim", holdout=0.4, params={"image_size": CANVAS})
    calibrate_bundle(folder / "trained", result.holdout_images, target_frr=0.05)
    export_bundle(folder / "trained", folder / "deployed")
    good = read_samples(dataset.test_good, masks=False).images
    return Calibrated(Path(dataset.root), folder / "trained", folder / "deployed", list(good))

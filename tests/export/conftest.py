"""One tiny trained, calibrated and exported bundle per registered model, shared by the export tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

CANVAS = 64


@dataclass(frozen=True)
class TinySet:
    """A 64-px synthetic set: its folder, test images and labels (1 = defective)."""

    root: Path
    images: list[np.ndarray]
    labels: np.ndarray


@dataclass(frozen=True)
class Exported:
    """A trained bundle, its deployable export (fp32 + int8) and the torch model loaded from it."""

    name: str
    trained: Path
    deployed: Path
    model: object
    holdout: list[np.ndarray]
    n_fit: int
    int8: bool


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> TinySet:
    from flawscope.data.datasets import read_samples
    from flawscope.data.synthetic import SyntheticSpec, write_dataset

    spec = SyntheticSpec(size=(CANVAS, CANVAS), n_train=40, n_test_good=20, n_test_defect_per_type=3, seed=1)
    dataset = write_dataset(tmp_path_factory.mktemp("export-set") / "data", spec)
    test = read_samples(dataset.test, masks=False)
    return TinySet(Path(dataset.root), list(test.images), np.array([s.label for s in test.samples]))


# Extra variants: PatchCore's exact in-graph search (the one INT8 can quantise; its default IVF
# search runs next to the graph and is exported in fp32 only).
VARIANTS = {"patchcore-exact": ("patchcore", {"search": "exact"})}


def _model_names() -> list[str]:
    from flawscope.declaration import Task
    from flawscope.models import MODELS

    # Models that learn from labels are exported and checked in tests/export/test_supervised.py.
    return [*sorted(name for name, cls in MODELS.items() if cls.task is Task.ANOMALY), *VARIANTS]


@pytest.fixture(scope="session", params=_model_names())
def exported(
    request: pytest.FixtureRequest, tiny_set: TinySet, tmp_path_factory: pytest.TempPathFactory
) -> Exported:
    import torch

    from flawscope.bundle import read_bundle
    from flawscope.decide.workflow import calibrate_bundle
    from flawscope.export.inputs import int8_inputs
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.io import load_model
    from flawscope.models.train import train

    torch.set_num_threads(2)
    name = request.param
    model_name, extra = VARIANTS.get(name, (name, {}))
    folder = tmp_path_factory.mktemp(f"export-{name}")
    # A quarter of the 40 good training images (10) is held out: calibration needs at least 10.
    params = {"image_size": CANVAS, **extra}
    result = train(tiny_set.root, folder / "trained", model=model_name, holdout=0.25, params=params)
    calibrate_bundle(folder / "trained", result.holdout_images, target_frr=0.1)
    model, _ = load_model(folder / "trained")
    # The images an `flawscope export --int8` finds from the manifest: the held-out good images
    # to calibrate on, the fitted ones to refit the head on, the test split to validate on.
    int8 = model.host_search() is None
    if int8:
        inputs = int8_inputs(read_bundle(folder / "trained").manifest)
        export_bundle(folder / "trained", folder / "deployed", **inputs.export_args())
    else:
        export_bundle(folder / "trained", folder / "deployed")
    return Exported(
        name, folder / "trained", folder / "deployed", model, result.holdout_images, result.n_train, int8
    )

"""A small plant: a live model trained without one defect type, and the reviewed feedback that shows it.

The base dataset has scratches and spots; cracks appear later on the line (the "new" type). The
feedback folder is laid out as ``flawscope feedback export`` writes it, with one image labelled
both good and crack (a conflict to report and exclude).
"""

from __future__ import annotations

import csv
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

CANVAS = 64


@dataclass(frozen=True)
class Plant:
    """Folders of the improvement tests.

    Attributes:
        dataset: the base model's training set (scratch, spot).
        later: a dataset of the same parts with the new type (crack) in its test split.
        live: the live deployable bundle.
        trained: its trained bundle.
        feedback: the reviewed feedback dataset.
        conflict: the image labelled both good and crack.
    """

    dataset: Path
    later: Path
    live: Path
    trained: Path
    feedback: Path
    conflict: str


def _feedback(root: Path, later: Path) -> tuple[Path, str]:
    from flawscope.data.datasets import load_dataset

    loaded = load_dataset(later)
    folder = root / "feedback"
    rows = []
    goods = [s for s in loaded.test if s.label == 0][:8]
    cracks = [s for s in loaded.test if s.defect_type == "crack"][:6]
    for n, sample in enumerate([*goods, *cracks]):
        label = "good" if sample.label == 0 else "crack"
        target = folder / "train" / label / f"{100 + n}_part{n}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample.path, target)
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        rows.append(
            {
                "file": target.relative_to(folder).as_posix(),
                "label": int(label != "good"),
                "defect_type": label,
                "review_seq": 100 + n,
                "image_sha256": digest,
            }
        )
    # The same image reviewed as good by one person and as a crack by another.
    conflict = folder / "train" / "crack" / "200_dup.png"
    shutil.copyfile(goods[0].path, conflict)
    rows.append(
        {
            "file": conflict.relative_to(folder).as_posix(),
            "label": 1,
            "defect_type": "crack",
            "review_seq": 200,
            "image_sha256": hashlib.sha256(conflict.read_bytes()).hexdigest(),
        }
    )
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["file", "label", "defect_type", "review_seq", "image_sha256"])
        writer.writeheader()
        writer.writerows(rows)
    return folder, str(conflict)


@pytest.fixture(scope="session")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Plant:
    import torch

    from flawscope.data.synthetic import SyntheticSpec, write_dataset
    from flawscope.decide.workflow import calibrate_bundle
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.train import train

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("plant")
    base = SyntheticSpec(
        size=(CANVAS, CANVAS),
        n_train=60,
        n_test_good=20,
        n_test_defect_per_type=6,
        defect_types=("scratch", "spot"),
        seed=11,
    )
    dataset = write_dataset(root / "base", base)
    later = SyntheticSpec(
        size=(CANVAS, CANVAS),
        n_train=10,
        n_test_good=20,
        n_test_defect_per_type=8,
        defect_types=("scratch", "spot", "crack"),
        seed=12,
    )
    later_set = write_dataset(root / "later", later)
    result = train(dataset, root / "trained", model="padim", holdout=0.4, params={"image_size": CANVAS})
    calibrate_bundle(root / "trained", result.holdout_images, target_frr=0.05)
    export_bundle(root / "trained", root / "live")
    feedback, conflict = _feedback(root, Path(later_set.root))
    return Plant(
        Path(dataset.root), Path(later_set.root), root / "live", root / "trained", feedback, conflict
    )


@pytest.fixture(scope="session")
def candidate(plant: Plant, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The candidate retrained from the base set and the feedback (deployable bundle)."""
    from flawscope.improve.retrain import retrain

    out = tmp_path_factory.mktemp("candidate") / "c1"
    return retrain(plant.trained, plant.feedback, out).deployed

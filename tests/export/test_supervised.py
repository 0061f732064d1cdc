"""A station (trained segmenter + PaDiM on one trunk), from labelled folders to the torch-free runtime.

Trained with ``train_supervised`` on a small generated MVTec-layout set with labelled defects in
``train/<class>/``, calibrated on held-out good parts, exported fp32 + INT8: the fp32 graph gives
every declared output within 1e-3 of torch and the same verdicts, the INT8 graph was validated on
the labelled test split, and the runtime imports no torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

CANVAS = 64
SCRIPT = Path(__file__).resolve().parents[1] / "runtime" / "inspect_one.py"


def write_labelled_set(
    root: Path, n_good: int = 44, n_defect: int = 10, n_test: int = 6, seed: int = 5
) -> Path:
    """``train/{good,scratch,spot}``, ``test/...`` and ``ground_truth/<class>/<stem>_mask.png``."""
    from flawscope.data.synthetic import SyntheticSpec, add_defect, make_part

    rng = np.random.default_rng(seed)
    spec = SyntheticSpec(texture="brushed_metal", size=(CANVAS, 80), seed=seed)
    for split, goods, defects in (("train", n_good, n_defect), ("test", n_test, n_test)):
        (root / split / "good").mkdir(parents=True, exist_ok=True)
        for i in range(goods):
            cv2.imwrite(str(root / split / "good" / f"{split}_{i:03d}.png"), make_part(rng, spec))
        for kind in ("scratch", "spot"):
            (root / split / kind).mkdir(parents=True, exist_ok=True)
            (root / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
            for i in range(defects):
                image, mask = add_defect(make_part(rng, spec), kind, rng)
                stem = f"{split}_{kind}_{i:03d}"
                cv2.imwrite(str(root / split / kind / f"{stem}.png"), image)
                cv2.imwrite(
                    str(root / "ground_truth" / kind / f"{stem}_mask.png"), mask.astype(np.uint8) * 255
                )
    return root


@dataclass(frozen=True)
class Station:
    trained: Path
    deployed: Path
    model: object
    images: list[np.ndarray]
    labels: np.ndarray


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> Station:
    import torch

    from flawscope.bundle import read_bundle
    from flawscope.data.labelled import load_labelled
    from flawscope.decide.workflow import calibrate_bundle
    from flawscope.export.inputs import int8_inputs
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.io import load_model
    from flawscope.models.train_supervised import read_labelled, train_supervised

    torch.set_num_threads(2)
    folder = tmp_path_factory.mktemp("station")
    data = write_labelled_set(folder / "data")
    params = {"image_size": CANVAS, "epochs": 15, "views": 0, "width": 16, "anomaly": "padim", "patience": 0}
    result = train_supervised(data, folder / "trained", "segment", holdout_fraction=0.25, params=params)
    calibrate_bundle(folder / "trained", result.holdout_images, target_frr=0.1)
    inputs = int8_inputs(read_bundle(folder / "trained").manifest)
    assert inputs.validation is not None
    export_bundle(folder / "trained", folder / "deployed", **inputs.export_args())
    model, _ = load_model(folder / "trained")
    test = read_labelled(load_labelled(data).select("test").samples, masks=False)
    labels = np.array([0 if c == "good" else 1 for c in test.targets.classes])
    return Station(folder / "trained", folder / "deployed", model, test.images, labels)


def test_the_station_runs_every_head_from_one_trunk_pass(station):
    import onnx

    from flawscope.runtime import Inspector

    inspector = Inspector.load(station.deployed, threads=2)
    declared = inspector.declaration
    assert declared.output_names == ["patch_scores", "defect_score", "class_probs", "defect_map", "class_map"]
    assert declared.classes == ("good", "scratch", "spot")
    graph = onnx.load(str(station.deployed / "model.onnx")).graph
    stems = [n for n in graph.node if n.op_type == "Conv" and n.input[0] == "image"]
    assert len(stems) == 1, "one trunk: the stem convolution appears once"
    thresholds = inspector.thresholds
    assert (
        thresholds is not None and thresholds.anomaly_reject is not None and thresholds.min_confidence == 0.5
    )


def test_fp32_outputs_and_verdicts_match_torch(station):
    from flawscope.data.preprocess import to_batch
    from flawscope.decide.verdict import decide_many
    from flawscope.runtime import Inspector

    inspector = Inspector.load(station.deployed, threads=2)
    batch, _ = to_batch(station.images, station.model.preprocessing_)
    got, want = inspector._run(batch), station.model.raw_outputs(batch)
    for name in ("patch_scores", "defect_score", "class_probs", "defect_map"):
        scale = max(float(np.abs(want[name]).max()), 1e-6)
        np.testing.assert_allclose(got[name], want[name], rtol=1e-3, atol=1e-3 * scale)
    reference = station.model.predict(station.images)
    expected = decide_many(reference, inspector.thresholds, inspector.model_hash)
    verdicts = inspector.inspect_many(station.images)
    assert [v.outcome for v in verdicts] == [v.outcome for v in expected]
    assert [v.category for v in verdicts] == [v.category for v in expected]
    outcomes = {str(v.outcome) for v in verdicts}
    assert "pass" in outcomes and "fail" in outcomes, "the comparison covers both sides of the threshold"
    failed = [v for v in verdicts if str(v.outcome) == "fail"]
    assert all(v.category in ("scratch", "spot") and v.confidence is not None for v in failed)


def test_int8_graph_was_validated_on_labelled_parts(station):
    from flawscope.bundle import read_bundle
    from flawscope.runtime import Inspector

    int8 = read_bundle(station.deployed).manifest.deploy.int8
    assert int8 is not None and int8.validation is not None
    assert int8.validation["n_defect"] == int(station.labels.sum())
    assert int8.within_tolerance is not None
    assert int8.head_refit_images > 0  # the anomaly head was refitted on quantised features
    inspector = Inspector.load(station.deployed, int8=True, threads=2)
    scores = inspector.score_many(station.images).scores
    from sklearn.metrics import roc_auc_score

    auroc = roc_auc_score(station.labels, scores)
    assert auroc == pytest.approx(int8.validation["image_auroc_int8"], abs=1e-6)
    print(f"\nINT8 station: AUROC {auroc:.4f} (fp32 {int8.validation['image_auroc_fp32']:.4f})")


def test_runtime_imports_no_torch_for_the_station(station, tmp_path):
    image = tmp_path / "part.npy"
    np.save(image, station.images[-1])
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(station.deployed), str(image)],
        capture_output=True, text=True, timeout=300, cwd="/",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["heavy_modules_loaded"] == []
    assert report["verdict"]["outcome"] in ("pass", "review", "fail")


def test_int8_inputs_follow_the_recorded_hold_out(station):
    # A retrained candidate holds out its base model's calibration parts, which the seeded split
    # would not draw again: INT8 maps its scores on the hold-out as recorded, by content.
    from dataclasses import replace

    from flawscope.bundle import read_bundle
    from flawscope.data.imageio import read_image
    from flawscope.export.inputs import int8_inputs

    manifest = read_bundle(station.trained).manifest
    training = manifest.training
    assert len(int8_inputs(manifest).holdout) == training.holdout.n_images
    root = Path(training.dataset)
    trained_good = [f for f in training.files if f.path.startswith("train/good/")]
    other = tuple(trained_good[:3])  # good parts the seeded split trained on
    changed = replace(
        manifest,
        training=replace(training, holdout=replace(training.holdout, files=other, n_images=len(other))),
    )
    inputs = int8_inputs(changed)
    held = sorted(read_image(root / f.path).tobytes() for f in other)
    assert sorted(image.tobytes() for image in inputs.holdout) == held

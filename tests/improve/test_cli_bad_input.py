"""The bad input of retraining and shadow evaluation, as a user meets it on the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250"}  # table cells on one line each
    return subprocess.run(
        [sys.executable, "-m", "flawscope.cli", *args], capture_output=True, text=True, timeout=600, env=env
    )


def _error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr  # one line says what is wrong (notes may come before it)
    return errors[0]


@pytest.fixture(scope="module")
def stretched(plant, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A candidate trained on another preprocessing (stretched instead of fitted and padded)."""
    from flawscope.decide.workflow import calibrate_bundle
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.train import train

    folder = tmp_path_factory.mktemp("stretched")
    params = {"image_size": 64, "resize_mode": "stretch"}
    other = train(plant.dataset, folder / "t", model="padim", holdout=0.4, params=params)
    calibrate_bundle(folder / "t", other.holdout_images, target_frr=0.05)
    return export_bundle(folder / "t", folder / "d").path


def test_retrain_names_conflicting_labels_and_the_new_class(plant, tmp_path: Path) -> None:
    done = _cli("retrain", str(plant.trained), "--feedback", str(plant.feedback), "-o", str(tmp_path / "c"))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "new defect types" in out and "crack" in out
    assert "left out" in out and "200_dup.png" in out and "also labelled good" in out
    assert "conflicting labels left out until resolved" in out


def test_retrain_of_a_missing_feedback_folder_is_one_line(plant, tmp_path: Path) -> None:
    line = _error_line(
        _cli("retrain", str(plant.trained), "--feedback", str(tmp_path / "none"), "-o", str(tmp_path / "c"))
    )
    assert "feedback folder does not exist" in line


def test_shadow_with_another_preprocessing_is_refused_in_one_line(plant, stretched, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    source = plant.later / "test" / "good"
    line = _error_line(
        _cli("inspect", str(plant.live), "--source", str(source), "--audit", url, "--shadow", str(stretched))
    )
    assert "different preprocessing" in line and "mode" in line


def test_compare_with_another_preprocessing_says_why(plant, stretched, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    common = ["--registry", str(tmp_path / "models"), "--audit", url, "--station", "s"]
    for bundle in (plant.live, stretched):
        assert _cli("model", "register", str(bundle), "--by", "ann", *common).returncode == 0
    from flawscope.audit import AuditLog
    from flawscope.improve.registry import ModelRegistry

    with AuditLog.open(url) as audit:
        live, other = [v.version for v in ModelRegistry(tmp_path / "models", audit, "s").versions()]
    assert _cli("model", "promote", live, "--by", "ann", "--reason", "first", *common).returncode == 0
    done = _cli("model", "compare", other, "--by", "ann", "--data", str(plant.later), *common)
    shown = " ".join((done.stdout + done.stderr).split())
    assert "Traceback" not in shown and "different preprocessing" in shown
    line = _error_line(_cli("model", "promote", other, "--by", "ann", "--reason", "try", *common))
    assert "refused" in line and "different preprocessing" in line


def test_a_line_with_a_shadow_says_how_the_candidate_decided(plant, candidate, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    source = plant.later / "test"
    done = _cli(
        "inspect", str(plant.live), "--source", str(source), "--audit", url, "--shadow", str(candidate)
    )
    assert done.returncode == 0, done.stderr
    n = sum(1 for p in source.rglob("*.png"))
    line = next(text for text in done.stdout.splitlines() if text.startswith("shadow "))
    assert f"judged {n} parts: the same decision on " in line and "shadow:station-1" in line

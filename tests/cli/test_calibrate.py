"""``flawscope calibrate`` knows what the bundle was trained on.

The manifest lists every file fitted on and held out (path and SHA-256); calibrating on training
images is refused (also on copies of them), ``--allow-training-images`` overrides with a warning,
``--holdout-of DATA`` uses the bundle's own hold-out and a dataset folder gives its good images.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flawscope.data.imageio import sha256_file
from flawscope.manifest import FileRecord
from flawscope.models.provenance import list_hash


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


@pytest.fixture
def bundle(trained, tmp_path: Path) -> Path:
    """A copy of the session's trained bundle, free to calibrate."""
    return Path(shutil.copytree(trained.bundle, tmp_path / "bundle"))


def test_the_manifest_lists_every_training_and_held_out_file(trained):
    training = _manifest(trained.bundle)["training"]
    fitted, held = training["files"], training["holdout"]["files"]
    assert len(fitted) == training["n_images"] == 18 and len(held) == training["holdout"]["n_images"] == 12
    on_disk = {p.relative_to(trained.data).as_posix() for p in (trained.data / "train" / "good").iterdir()}
    assert {f["path"] for f in fitted} | {f["path"] for f in held} == on_disk
    assert not {f["path"] for f in fitted} & {f["path"] for f in held}
    for record in fitted[:3] + held[:3]:
        assert record["sha256"] == sha256_file(trained.data / record["path"])
    # The older one-digest keys stay, computed from the same lists.
    assert training["file_list_sha256"] == list_hash([FileRecord(**f) for f in fitted])
    assert training["holdout"]["file_list_sha256"] == list_hash([FileRecord(**f) for f in held])


def test_training_images_are_refused_even_as_copies(cli, one_error, trained, bundle: Path, tmp_path: Path):
    before = (bundle / "manifest.json").read_bytes()
    run = cli("calibrate", bundle, trained.data / "train" / "good", cwd=tmp_path)
    line = one_error(run, "18 of 30 calibration images were used to train this bundle", "--holdout-of")
    assert "--allow-training-images" in line
    # The same files renamed in another folder are recognised by their content.
    copies = tmp_path / "copies"
    copies.mkdir()
    for i, record in enumerate(_manifest(bundle)["training"]["files"][:12]):
        shutil.copy(trained.data / record["path"], copies / f"new-{i:02d}.png")
    run = cli("calibrate", bundle, copies, cwd=tmp_path)
    one_error(run, str(copies), "12 of 12 calibration images were used to train this bundle")
    assert (bundle / "manifest.json").read_bytes() == before


def test_training_images_can_be_allowed_with_a_warning(cli, trained, bundle: Path, tmp_path: Path):
    run = cli(
        "calibrate", bundle, trained.data, "--allow-training-images", "--target-frr", "0.1", cwd=tmp_path
    )
    assert run.rc == 0, run.text
    assert "warning: 18 of 30 calibration images were used to train this bundle" in run.out
    manifest = _manifest(bundle)
    assert manifest["calibration"]["n_training_images"] == 18
    assert any("used to train" in w for w in manifest["calibration"]["warnings"])


def test_holdout_of_uses_the_bundles_own_hold_out(cli, trained, bundle: Path, tmp_path: Path):
    run = cli("calibrate", bundle, "--holdout-of", trained.data, "--target-frr", "0.1", cwd=tmp_path)
    assert run.rc == 0, run.text
    assert "calibrating on 12 good images: the 12 good images this bundle held out at training" in run.out
    latest = _manifest(bundle)["thresholds"][-1]
    assert latest["version"] == 2 and latest["n_calibration"] == 12 and latest["target_frr"] == 0.1


def test_a_dataset_folder_gives_its_good_training_split_and_says_so(cli, trained, tmp_path: Path):
    # Another dataset of good parts from the same line, in the MVTec layout.
    from flawscope.data.synthetic import SyntheticSpec, write_dataset

    spec = SyntheticSpec(size=(64, 64), n_train=12, n_test_good=3, n_test_defect_per_type=1, seed=99)
    other = Path(write_dataset(tmp_path / "more-parts", spec).root)
    bundle = Path(shutil.copytree(trained.bundle, tmp_path / "bundle"))
    run = cli("calibrate", bundle, other, "--target-frr", "0.1", cwd=tmp_path)
    assert run.rc == 0, run.text
    assert f"calibrating on 12 good images: {other / 'train' / 'good'}" in run.out
    assert _manifest(bundle)["thresholds"][-1]["n_calibration"] == 12


def test_a_wide_review_rate_warns(cli, trained, bundle: Path, tmp_path: Path):
    run = cli("calibrate", bundle, "--holdout-of", trained.data, "--review-rate", "0.9", cwd=tmp_path)
    assert run.rc == 0, run.text
    assert "warning: --review-rate 0.9 sends 90% of good parts to review" in run.out


def test_holdout_of_refuses_changed_files_and_bundles_without_a_hold_out(
    cli, one_error, trained, bundle: Path, tmp_path: Path
):
    data = Path(shutil.copytree(trained.data, tmp_path / "parts"))
    held = _manifest(bundle)["training"]["holdout"]["files"][0]["path"]
    (data / held).write_bytes((data / _manifest(bundle)["training"]["files"][0]["path"]).read_bytes())
    run = cli("calibrate", bundle, "--holdout-of", data, cwd=tmp_path)
    one_error(run, str(data / held), "differs from the image this bundle held out")

    # A bundle trained without a hold-out (on a few of the parts, small: only its manifest matters).
    few = tmp_path / "few" / "good"
    few.mkdir(parents=True)
    for image in sorted((trained.data / "train" / "good").iterdir())[:8]:
        shutil.copy(image, few / image.name)
    no_holdout = tmp_path / "no-holdout"
    trained_run = cli("train", few.parent, "-o", no_holdout, "--image-size", "32", cwd=tmp_path)
    assert trained_run.rc == 0, trained_run.text
    run = cli("calibrate", no_holdout, "--holdout-of", trained.data, cwd=tmp_path)
    one_error(run, "--holdout-of", "trained without a hold-out")


def test_calibrate_needs_images_or_holdout_of_not_both(cli, one_error, trained, bundle: Path, tmp_path: Path):
    one_error(cli("calibrate", bundle, cwd=tmp_path), "--holdout-of")
    one_error(
        cli("calibrate", bundle, trained.data, "--holdout-of", trained.data, cwd=tmp_path), "one of them"
    )

"""Bundle integrity: every listed file and the manifest itself are checked on load (torch-free)."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest

from flawscope.bundle import (
    FORMAT_VERSION,
    MANIFEST,
    canonical_json,
    check_trust,
    read_bundle,
    resign_bundle,
    sha256_bytes,
    update_manifest,
    write_bundle,
)
from flawscope.data.preprocess import Preprocessing
from flawscope.decide.thresholds import ThresholdHistory, Thresholds
from flawscope.errors import BundleError
from flawscope.manifest import BackboneSection, Manifest, ModelSection

WEIGHTS = b"\x00\x01weights" * 1000
GRAPH = b"onnx-graph" * 500


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "bundle"
    write_bundle(folder, _manifest(), {"model.safetensors": WEIGHTS, "model.onnx": GRAPH})
    return folder


def _manifest(**changes) -> Manifest:
    base = Manifest(
        model=ModelSection("padim"),
        backbone=BackboneSection("efficientnet_lite0"),
        preprocessing=Preprocessing(64, 64),
        model_hash=sha256_bytes(WEIGHTS),
    )
    return dataclasses.replace(base, **changes)


def _history(*rejects: float) -> ThresholdHistory:
    history = ThresholdHistory()
    for reject in rejects:
        history = history.add(Thresholds.explicit(reject))
    return history


def _edit_manifest(folder: Path, edit) -> None:
    path = folder / MANIFEST
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))


def test_round_trip_lists_every_file_with_its_hash(bundle_dir: Path):
    bundle = read_bundle(bundle_dir)

    assert bundle.manifest.files == {
        "model.safetensors": sha256_bytes(WEIGHTS),
        "model.onnx": sha256_bytes(GRAPH),
    }
    assert bundle.manifest.model == ModelSection("padim")
    signature = bundle.manifest.signature
    expected = dataclasses.replace(_manifest(), files=bundle.manifest.files, signature=signature)
    assert bundle.manifest == expected
    assert signature is not None and check_trust(bundle).signer == signature.key_id
    assert json.loads((bundle_dir / MANIFEST).read_text())["format_version"] == FORMAT_VERSION == 2
    assert bundle.file("model.onnx").read_bytes() == GRAPH
    assert bundle.model_hash == sha256_bytes(WEIGHTS)
    # Only the written files and the manifest: no temporary files left behind.
    assert sorted(p.name for p in bundle_dir.iterdir()) == sorted(
        [MANIFEST, "model.onnx", "model.safetensors"]
    )


def test_written_files_are_readable_by_others_under_the_umask(bundle_dir: Path):
    previous = os.umask(0o022)
    os.umask(previous)
    for name in (MANIFEST, "model.safetensors"):
        mode = stat.S_IMODE((bundle_dir / name).stat().st_mode)
        assert mode == 0o666 & ~previous, f"{name}: {oct(mode)}"


def test_a_file_the_manifest_does_not_list_is_refused(bundle_dir: Path):
    bundle = read_bundle(bundle_dir)
    with pytest.raises(BundleError, match=r"no file 'other\.bin'"):
        bundle.file("other.bin")


def test_altered_file_is_refused_naming_it(bundle_dir: Path):
    target = bundle_dir / "model.safetensors"
    data = bytearray(target.read_bytes())
    data[100] ^= 0x01
    target.write_bytes(bytes(data))

    with pytest.raises(BundleError, match=r"model\.safetensors: file was altered") as info:
        read_bundle(bundle_dir)
    assert str(bundle_dir) in str(info.value)


def test_same_size_swap_of_two_files_is_refused(bundle_dir: Path):
    # Same names, contents exchanged: hashes, not sizes or names, are what is checked.
    (bundle_dir / "model.onnx").write_bytes(GRAPH[::-1])
    with pytest.raises(BundleError, match=r"model\.onnx: file was altered"):
        read_bundle(bundle_dir)


def test_missing_file_is_refused_naming_it(bundle_dir: Path):
    (bundle_dir / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.onnx: file listed in the manifest is missing"):
        read_bundle(bundle_dir)


def test_hand_edited_manifest_is_refused(bundle_dir: Path):
    def raise_threshold(manifest):
        manifest["thresholds"] = _history(999.0).to_list()

    _edit_manifest(bundle_dir, raise_threshold)
    with pytest.raises(BundleError, match=r"manifest\.json: manifest was altered"):
        read_bundle(bundle_dir)


def test_edited_file_hash_in_manifest_is_refused(bundle_dir: Path):
    # Someone "fixes" a swapped file by writing its new hash into the manifest: the self-hash catches it.
    (bundle_dir / "model.onnx").write_bytes(b"another graph")

    def relist(manifest):
        manifest["files"]["model.onnx"] = sha256_bytes(b"another graph")

    _edit_manifest(bundle_dir, relist)
    with pytest.raises(BundleError, match="manifest was altered"):
        read_bundle(bundle_dir)


def test_reformatting_the_manifest_is_not_an_alteration(bundle_dir: Path):
    # The self-hash is over canonical JSON, so whitespace and key order do not matter.
    path = bundle_dir / MANIFEST
    before = read_bundle(bundle_dir).manifest
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps(dict(reversed(list(manifest.items())))))
    assert read_bundle(bundle_dir).manifest == before


def test_newer_format_version_is_refused_even_without_verification(bundle_dir: Path):
    _edit_manifest(bundle_dir, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(BundleError, match=f"bundle format {FORMAT_VERSION + 1} is newer"):
        read_bundle(bundle_dir, verify=False)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a flawscope bundle manifest"),
        ('{"format": "something-else"}', "not a flawscope bundle manifest"),
        ('{"format": "flawscope-bundle", "format_version": "2"}', "format_version must be a whole number"),
        ('{"format": "flawscope-bundle", "format_version": 1, "files": ["a"]}', "must be a mapping"),
    ],
)
def test_malformed_manifest_is_refused_not_crashed(tmp_path: Path, content: str, problem: str):
    (tmp_path / MANIFEST).write_text(content)
    with pytest.raises(BundleError, match=problem) as info:
        read_bundle(tmp_path)
    assert MANIFEST in str(info.value)


@pytest.mark.parametrize("name", ["../outside.bin", "/etc/passwd", "sub/file.bin", MANIFEST, ""])
def test_manifest_cannot_list_files_outside_the_bundle(tmp_path: Path, name: str):
    manifest = {"format": "flawscope-bundle", "format_version": 1, "files": {name: "0" * 64}}
    manifest["manifest_sha256"] = sha256_bytes(canonical_json(manifest))
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="invalid file name"):
        read_bundle(tmp_path)
    with pytest.raises(BundleError, match="invalid file name"):
        write_bundle(tmp_path / "new", _manifest(), {name: b"x"})


def test_not_a_bundle_folder(tmp_path: Path):
    with pytest.raises(BundleError, match="does not exist or is a file"):
        read_bundle(tmp_path / "nowhere")
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        read_bundle(tmp_path)


def test_update_manifest_keeps_integrity_and_other_keys(bundle_dir: Path):
    bundle = read_bundle(bundle_dir)
    before = (bundle_dir / MANIFEST).read_bytes()
    updated = update_manifest(bundle, metrics={"image_auroc": 0.9}, thresholds=_history(2.0))

    again = read_bundle(bundle_dir)
    assert again.manifest == updated.manifest
    assert again.manifest.metrics == {"image_auroc": 0.9}
    assert again.manifest.thresholds == _history(2.0)
    assert again.manifest.files == bundle.manifest.files
    assert again.manifest.model == bundle.manifest.model
    after = (bundle_dir / MANIFEST).read_text()
    assert json.loads(before)["manifest_sha256"] != json.loads(after)["manifest_sha256"]


def test_update_manifest_keeps_changes_made_since_loading(bundle_dir: Path):
    # Two updates computed from the same loaded bundle (e.g. calibrate and evaluate): neither is lost.
    loaded = read_bundle(bundle_dir)
    update_manifest(loaded, thresholds=_history(2.0))
    update_manifest(loaded, metrics={"image_auroc": 0.5})

    manifest = read_bundle(bundle_dir).manifest
    assert manifest.thresholds == _history(2.0)
    assert manifest.metrics == {"image_auroc": 0.5}


def test_update_manifest_refuses_an_altered_bundle(bundle_dir: Path):
    bundle = read_bundle(bundle_dir)
    (bundle_dir / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(BundleError, match="file was altered"):
        update_manifest(bundle, metrics={})
    # The altered file was not blessed into the manifest.
    with pytest.raises(BundleError, match="file was altered"):
        read_bundle(bundle_dir)


def test_update_manifest_refuses_results_for_files_replaced_since_loading(bundle_dir: Path):
    old = read_bundle(bundle_dir)
    # Re-trained meanwhile: new weights, correctly written.
    write_bundle(
        bundle_dir,
        dataclasses.replace(old.manifest, model_hash=sha256_bytes(b"new")),
        {"model.safetensors": b"new"},
    )
    with pytest.raises(BundleError, match="files changed since it was loaded"):
        update_manifest(old, thresholds=_history(1.0))
    assert read_bundle(bundle_dir).manifest.thresholds == ThresholdHistory()


def test_update_manifest_refuses_to_touch_integrity_fields(bundle_dir: Path):
    with pytest.raises(ValueError, match="files"):
        update_manifest(read_bundle(bundle_dir), files={})
    with pytest.raises(ValueError, match="no field"):
        update_manifest(read_bundle(bundle_dir), note="x")


def test_write_bundle_keeps_and_rehashes_listed_files(bundle_dir: Path):
    manifest = read_bundle(bundle_dir).manifest
    changed = dataclasses.replace(manifest, created_at="x")
    rewritten = write_bundle(bundle_dir, changed, {"extra.bin": b"extra"})
    assert set(rewritten.manifest.files) == {"model.safetensors", "model.onnx", "extra.bin"}
    assert read_bundle(bundle_dir).manifest.created_at == "x"


def test_write_bundle_refuses_a_listed_file_that_is_gone(bundle_dir: Path):
    manifest = read_bundle(bundle_dir).manifest
    (bundle_dir / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.onnx: file listed in the manifest is missing"):
        write_bundle(bundle_dir, manifest, {})


# ------------------------------------------------------------------ format 1 bundles and strictness


def _write_v1(folder: Path, deploy: bool = True) -> dict:
    """A bundle laid out exactly as flawscope wrote format 1 (before the typed manifest)."""
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(GRAPH)
    thresholds = _history(2.5, 3.0).to_list()
    manifest = {
        "format": "flawscope-bundle",
        "format_version": 1,
        "created_at": "2025-01-01T00:00:00+00:00",
        "model": {"name": "padim", "hyperparameters": {"backbone": "efficientnet_lite0"}, "output_stride": 8},
        "backbone": {"name": "efficientnet_lite0", "weights_sha256": "ab" * 32, "licence": "Apache-2.0"},
        "preprocessing": {"height": 64, "width": 96, "mode": "fit_pad", "mean": [0.5] * 3, "std": [0.25] * 3},
        "model_hash": sha256_bytes(WEIGHTS),
        "training": {
            "dataset": "/data/x",
            "dataset_name": "x",
            "layout": "mvtec",
            "n_images": 30,
            "file_list_sha256": "cd" * 32,
            "skipped": [{"path": "/data/x/bad.png", "problem": "unreadable"}],
            "holdout": {"fraction": 0.2, "n_images": 6, "rule": "every k-th", "file_list_sha256": None},
            "fit_seconds": 1.5,
        },
        "thresholds": thresholds,
        "calibration": {"n_good": 6, "warnings": []},
        "metrics": {"metrics": {"image_auroc": 0.97}},
        "versions": {"flawscope": "0.1.0"},
        "files": {"model.onnx": sha256_bytes(GRAPH)},
    }
    if deploy:
        manifest["deploy"] = {
            "graph": "model.onnx",
            "opset": 17,
            "input": [None, 3, 64, 96],
            "graph_int8": "model.int8.onnx",
            "int8_calibration_images": 16,
            "int8_head_refit_images": 24,
            "int8_score_map": {"scale": 1.0, "offset": 0.0},
            "int8_score_deviation": {"median": 0.01, "max": 0.05},
            "int8_rank_agreement": 0.99,
            "int8_false_rejects": None,
            "int8_validation": {"auroc_loss": 0.001, "n_good": 5, "n_defect": 5},
            "int8_max_auroc_loss": 0.005,
            "int8_within_tolerance": True,
            "onnx_sha256": {"model.onnx": sha256_bytes(GRAPH)},
        }
        manifest["versions_export"] = {"onnx": "1.16"}
    manifest["manifest_sha256"] = sha256_bytes(canonical_json(manifest))
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def test_a_format_1_bundle_is_upgraded_on_read(tmp_path: Path):
    _write_v1(tmp_path / "v1")
    manifest = read_bundle(tmp_path / "v1").manifest

    assert manifest.preprocessing == Preprocessing(64, 96, "fit_pad", (0.5,) * 3, (0.25,) * 3)
    assert manifest.model.hyperparameters == {"backbone": "efficientnet_lite0"}
    assert manifest.training.holdout.fraction == 0.2
    assert manifest.training.skipped[0].problem == "unreadable"
    assert [t.reject for t in manifest.thresholds.versions] == [2.5, 3.0]
    assert manifest.version_label() == f"{sha256_bytes(WEIGHTS)[:12]}.t2"
    deploy = manifest.deploy
    assert deploy is not None and deploy.input == (None, 3, 64, 96)
    # The flat int8_* keys and versions_export of format 1 moved into their sections.
    assert deploy.int8 is not None
    assert deploy.int8.validation == {"auroc_loss": 0.001, "n_good": 5, "n_defect": 5}
    assert deploy.int8.within_tolerance is True and deploy.int8.head_refit_images == 24
    assert deploy.versions == {"onnx": "1.16"}
    assert manifest.signature is None


def test_a_format_1_bundle_is_rewritten_as_format_2_once_its_owner_signs_it(tmp_path: Path):
    _write_v1(tmp_path / "v1", deploy=False)
    bundle = read_bundle(tmp_path / "v1")
    # Format 1 had no signatures: nothing re-signs it behind the user's back...
    with pytest.raises(BundleError, match="it is not signed"):
        update_manifest(bundle, metrics={"image_auroc": 0.5})
    # ...until the user vouches for it ('flawscope keys sign').
    signed = resign_bundle(tmp_path / "v1")
    raw = json.loads((tmp_path / "v1" / MANIFEST).read_text())
    assert raw["format_version"] == 2 and raw["signature"]["key_id"] == signed.manifest.signature.key_id
    update_manifest(read_bundle(tmp_path / "v1"), metrics={"image_auroc": 0.5})
    again = read_bundle(tmp_path / "v1").manifest
    assert dataclasses.replace(again, signature=None) == dataclasses.replace(
        bundle.manifest, metrics={"image_auroc": 0.5}
    )


def test_an_altered_format_1_manifest_is_still_refused(tmp_path: Path):
    raw = _write_v1(tmp_path / "v1")
    raw["thresholds"][-1]["reject"] = 99.0
    (tmp_path / "v1" / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="manifest was altered"):
        read_bundle(tmp_path / "v1")


def test_round_trip_of_every_section(tmp_path: Path):
    _write_v1(tmp_path / "v1")
    manifest = read_bundle(tmp_path / "v1").manifest
    assert Manifest.from_dict(manifest.to_dict()) == manifest
    write_bundle(tmp_path / "v2", dataclasses.replace(manifest, files={}), {"model.onnx": GRAPH})
    assert dataclasses.replace(read_bundle(tmp_path / "v2").manifest, signature=None) == manifest


def _rewrite_raw(folder: Path, edit) -> None:
    path = folder / MANIFEST
    raw = json.loads(path.read_text())
    edit(raw)
    raw.pop("manifest_sha256")
    raw["manifest_sha256"] = sha256_bytes(canonical_json(raw))
    path.write_text(json.dumps(raw))


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (
            lambda m: m["model"].update(task="classify"),
            r"manifest\.model: unknown field\(s\) task: .*newer flawscope",
        ),
        (lambda m: m.update(colour="red"), r"manifest: unknown field\(s\) colour"),
        (lambda m: m["model"].pop("name"), r"manifest\.model: missing field\(s\) name"),
        (lambda m: m["preprocessing"].update(height="64"), r"preprocessing\.height: must be a whole number"),
        (lambda m: m["preprocessing"].update(height=65), r"manifest\.preprocessing: .*multiple of 32"),
        (lambda m: m["thresholds"].append({"reject": 1.0}), r"thresholds: missing key"),
    ],
)
def test_an_unknown_missing_or_mistyped_field_is_named(bundle_dir: Path, edit, problem: str):
    _rewrite_raw(bundle_dir, edit)
    with pytest.raises(BundleError, match=problem) as info:
        read_bundle(bundle_dir)
    assert MANIFEST in str(info.value)


def test_missing_optional_fields_take_their_defaults(bundle_dir: Path):
    # What a file written before an optional field existed looks like: the field is absent.
    _rewrite_raw(bundle_dir, lambda m: [m.pop(k) for k in ("training", "metrics", "versions", "created_at")])
    manifest = read_bundle(bundle_dir).manifest
    assert manifest.training.n_images == 0 and manifest.metrics == {} and manifest.created_at == ""


def test_the_record_is_frozen(bundle_dir: Path):
    manifest = read_bundle(bundle_dir).manifest
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.model_hash = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        manifest.files["model.onnx"] = "0" * 64  # type: ignore[index]


def test_a_value_of_the_wrong_type_is_refused_before_writing(bundle_dir: Path):
    with pytest.raises(BundleError, match=r"not written: manifest\.model_hash: must be text, got 5"):
        write_bundle(bundle_dir, _manifest(model_hash=5), {})  # type: ignore[arg-type]

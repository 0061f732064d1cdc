"""Bundle integrity: every listed file and the manifest itself are checked on load (torch-free)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from flawscope.bundle import (
    FORMAT_VERSION,
    MANIFEST,
    canonical_json,
    read_bundle,
    sha256_bytes,
    update_manifest,
    write_bundle,
)
from flawscope.errors import BundleError

WEIGHTS = b"\x00\x01weights" * 1000
GRAPH = b"onnx-graph" * 500


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "bundle"
    manifest = {
        "model": {"name": "padim"},
        "model_hash": sha256_bytes(WEIGHTS),
        "thresholds": [],
        "metrics": {},
    }
    write_bundle(folder, manifest, {"model.safetensors": WEIGHTS, "model.onnx": GRAPH})
    return folder


def _edit_manifest(folder: Path, edit) -> None:
    path = folder / MANIFEST
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))


def test_round_trip_lists_every_file_with_its_hash(bundle_dir: Path):
    bundle = read_bundle(bundle_dir)

    assert bundle.manifest["files"] == {
        "model.safetensors": sha256_bytes(WEIGHTS),
        "model.onnx": sha256_bytes(GRAPH),
    }
    assert bundle.manifest["model"] == {"name": "padim"}
    assert bundle.manifest["format_version"] == FORMAT_VERSION
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
        manifest["thresholds"] = [{"version": 1, "reject": 999.0}]

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
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps(dict(reversed(list(manifest.items())))))
    assert read_bundle(bundle_dir).manifest == manifest


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
        write_bundle(tmp_path / "new", {}, {name: b"x"})


def test_not_a_bundle_folder(tmp_path: Path):
    with pytest.raises(BundleError, match="does not exist or is a file"):
        read_bundle(tmp_path / "nowhere")
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        read_bundle(tmp_path)


def test_update_manifest_keeps_integrity_and_other_keys(bundle_dir: Path):
    bundle = read_bundle(bundle_dir)
    updated = update_manifest(bundle, metrics={"image_auroc": 0.9}, thresholds=[{"version": 1}])

    again = read_bundle(bundle_dir)
    assert again.manifest == updated.manifest
    assert again.manifest["metrics"] == {"image_auroc": 0.9}
    assert again.manifest["thresholds"] == [{"version": 1}]
    assert again.manifest["files"] == bundle.manifest["files"]
    assert again.manifest["model"] == bundle.manifest["model"]
    assert again.manifest["manifest_sha256"] != bundle.manifest["manifest_sha256"]


def test_update_manifest_keeps_changes_made_since_loading(bundle_dir: Path):
    # Two updates computed from the same loaded bundle (e.g. calibrate and evaluate): neither is lost.
    loaded = read_bundle(bundle_dir)
    update_manifest(loaded, thresholds=[{"version": 1}])
    update_manifest(loaded, metrics={"image_auroc": 0.5})

    manifest = read_bundle(bundle_dir).manifest
    assert manifest["thresholds"] == [{"version": 1}]
    assert manifest["metrics"] == {"image_auroc": 0.5}


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
        bundle_dir, {**old.manifest, "model_hash": sha256_bytes(b"new")}, {"model.safetensors": b"new"}
    )
    with pytest.raises(BundleError, match="files changed since it was loaded"):
        update_manifest(old, thresholds=[{"version": 1, "reject": 1.0}])
    assert read_bundle(bundle_dir).manifest["thresholds"] == []


def test_update_manifest_refuses_to_touch_integrity_fields(bundle_dir: Path):
    with pytest.raises(ValueError, match="files"):
        update_manifest(read_bundle(bundle_dir), files={})


def test_write_bundle_keeps_and_rehashes_listed_files(bundle_dir: Path):
    manifest = read_bundle(bundle_dir).manifest
    rewritten = write_bundle(bundle_dir, {**manifest, "note": "x"}, {"extra.bin": b"extra"})
    assert set(rewritten.manifest["files"]) == {"model.safetensors", "model.onnx", "extra.bin"}
    assert read_bundle(bundle_dir).manifest["note"] == "x"


def test_write_bundle_refuses_a_listed_file_that_is_gone(bundle_dir: Path):
    manifest = read_bundle(bundle_dir).manifest
    (bundle_dir / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.onnx: file listed in the manifest is missing"):
        write_bundle(bundle_dir, manifest, {})

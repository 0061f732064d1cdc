"""A deployable bundle is loaded only with a valid signature from a key trusted here, not revoked.

Each attack is done the way someone with write access to the bundle would do it: edit, then make
every integrity hash consistent again (the unkeyed SHA-256s stop no one who can write the files).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flawscope.bundle import MANIFEST, canonical_json, read_bundle, resign_bundle, sha256_bytes, write_bundle
from flawscope.errors import BundleError
from flawscope.signing import ENV_VAR, KeyStore, public_pem


def _rehash(bundle: Path, edit) -> None:
    """Edit the manifest's JSON and recompute its unkeyed SHA-256, as a tamperer would."""
    path = bundle / MANIFEST
    raw = json.loads(path.read_text())
    edit(raw)
    raw.pop("manifest_sha256")
    raw["manifest_sha256"] = sha256_bytes(canonical_json(raw))
    path.write_text(json.dumps(raw, indent=2))


def _load(bundle: Path, **options):
    from flawscope.runtime import Inspector

    return Inspector.load(bundle, threads=1, **options)


def _foreign_store(monkeypatch, tmp_path: Path, name: str) -> KeyStore:
    """Sign from now on with the key store of another person or machine."""
    folder = tmp_path / name
    monkeypatch.setenv(ENV_VAR, str(folder))
    return KeyStore(folder)


def _public_key_file(store: KeyStore, folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    info = store.signing_key()[0]
    path = folder / f"{info.key_id}.pub"
    path.write_bytes(public_pem(info.public))
    return path


def test_the_exported_bundle_is_signed_by_this_machine_s_key_and_loads(deployed):
    inspector = _load(deployed.path)
    signature = read_bundle(deployed.path).manifest.signature
    assert signature is not None and inspector.provenance.signer == signature.key_id
    assert inspector.provenance.allow_unsigned is False
    assert KeyStore().signing_key()[0].key_id == signature.key_id  # the test session's own key


def test_a_rehashed_manifest_with_a_looser_threshold_is_refused(bundle_copy):
    def loosen(raw):
        raw["thresholds"][-1]["reject"] *= 10

    _rehash(bundle_copy, loosen)
    read_bundle(bundle_copy)  # the integrity hashes are consistent again...
    with pytest.raises(BundleError, match=r"does not match its content .altered after signing.") as info:
        _load(bundle_copy)  # ...but the signature is not
    assert str(bundle_copy) in str(info.value)


def test_a_swapped_graph_with_its_hash_rewritten_is_refused(bundle_copy):
    graph = bundle_copy / "model.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x01
    graph.write_bytes(bytes(data))

    def relist(raw):
        raw["files"]["model.onnx"] = sha256_bytes(bytes(data))

    _rehash(bundle_copy, relist)
    with pytest.raises(BundleError, match="does not match its content"):
        _load(bundle_copy)


def test_an_unsigned_bundle_is_refused_unless_allowed_and_then_every_record_says_so(bundle_copy, tmp_path):
    from flawscope.acquire import open_source
    from flawscope.audit import AuditLog
    from flawscope.line import run_line

    write_bundle(bundle_copy, read_bundle(bundle_copy).manifest, {}, signed=False)
    assert read_bundle(bundle_copy).manifest.signature is None
    with pytest.raises(BundleError, match=r"refused because it is not signed; .*flawscope keys sign"):
        _load(bundle_copy)
    inspector = _load(bundle_copy, allow_unsigned=True)
    assert inspector.provenance.allow_unsigned and inspector.provenance.signer == ""
    with AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}") as log:
        dataset = Path(read_bundle(bundle_copy).manifest.training.dataset or "")
        run_line(open_source(str(dataset / "test" / "good")), inspector, log, station="dev", batch_size=4)
        records = list(log.records())
        assert log.verify().ok
    assert records and all(r.allow_unsigned and r.signer == "" for r in records)


def test_a_loosened_threshold_loaded_without_its_signature_shows_in_every_record(bundle_copy, tmp_path):
    """Even past the signature check (--allow-unsigned), the trail tells the thresholds apart: the
    version label is unchanged, the hash of the threshold values is not."""
    from flawscope.acquire import open_source
    from flawscope.audit import AuditLog
    from flawscope.line import run_line

    signed = _load(bundle_copy)
    original = (signed.provenance.threshold_version, signed.provenance.threshold_sha256)

    def loosen(raw):
        raw["thresholds"][-1]["reject"] *= 10

    _rehash(bundle_copy, loosen)
    loosened = _load(bundle_copy, allow_unsigned=True)
    assert loosened.provenance.threshold_version == original[0]
    assert loosened.provenance.threshold_sha256 != original[1]
    with AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}") as log:
        dataset = Path(read_bundle(bundle_copy).manifest.training.dataset or "")
        run_line(open_source(str(dataset / "test" / "good")), loosened, log, station="dev", batch_size=4)
        records = list(log.records())
    assert records
    for record in records:
        assert record.threshold_version == original[0] and record.allow_unsigned
        assert record.threshold_sha256 == loosened.provenance.threshold_sha256 != original[1]
        assert record.graph_sha256 == signed.provenance.graph_sha256  # the graph was not touched


def test_a_bundle_signed_by_an_untrusted_key_is_refused_and_a_trust_store_admits_it(
    bundle_copy, monkeypatch, tmp_path
):
    mine = KeyStore()
    other = _foreign_store(monkeypatch, tmp_path, "colleague")
    resign_bundle(bundle_copy)  # signed with the colleague's key
    monkeypatch.setenv(ENV_VAR, str(mine.folder))
    signer = read_bundle(bundle_copy).manifest.signature.key_id
    with pytest.raises(BundleError, match=f"signed by key {signer}, which is not trusted by the key store"):
        _load(bundle_copy)
    station = tmp_path / "station-trust"
    _public_key_file(other, station)
    assert _load(bundle_copy, trusted_keys=station).provenance.signer == signer
    # A restricted station refuses even this machine's own key.
    mine_signed = Path(shutil.copytree(bundle_copy, tmp_path / "mine"))
    resign_bundle(mine_signed)
    assert _load(mine_signed).provenance.signer == mine.signing_key()[0].key_id
    with pytest.raises(BundleError, match="not trusted by the trust store"):
        _load(mine_signed, trusted_keys=station)


def test_a_tamperer_who_re_signs_with_an_own_key_is_refused(bundle_copy, monkeypatch, tmp_path):
    mine = KeyStore()

    def loosen(raw):
        raw["thresholds"][-1]["reject"] *= 10

    _rehash(bundle_copy, loosen)
    _foreign_store(monkeypatch, tmp_path, "attacker")
    resign_bundle(bundle_copy)
    monkeypatch.setenv(ENV_VAR, str(mine.folder))
    with pytest.raises(BundleError, match="which is not trusted"):
        _load(bundle_copy)


def test_a_revoked_key_is_refused(bundle_copy, monkeypatch, tmp_path):
    mine = KeyStore()
    other = _foreign_store(monkeypatch, tmp_path, "old-laptop")
    resign_bundle(bundle_copy)
    monkeypatch.setenv(ENV_VAR, str(mine.folder))
    station = tmp_path / "station-trust"
    _public_key_file(other, station)
    signer = read_bundle(bundle_copy).manifest.signature.key_id
    assert _load(bundle_copy, trusted_keys=station).provenance.signer == signer
    mine.revoke(signer, "laptop stolen")
    with pytest.raises(BundleError, match=rf"key {signer}, which was revoked .laptop stolen"):
        _load(bundle_copy, trusted_keys=station)


def test_calibrate_and_export_refuse_to_re_sign_an_untrusted_bundle(deployed, monkeypatch, tmp_path):
    from flawscope.bundle import update_manifest
    from flawscope.export.onnx_export import export_bundle

    trained = Path(shutil.copytree(deployed.trained, tmp_path / "trained"))
    write_bundle(trained, read_bundle(trained).manifest, {}, signed=False)
    with pytest.raises(BundleError, match="not signed"):
        export_bundle(trained, tmp_path / "out")
    with pytest.raises(BundleError, match="not signed"):
        update_manifest(read_bundle(trained), metrics={"x": 1})
    assert not (tmp_path / "out").exists()
    resign_bundle(trained)  # the user vouches for it: 'flawscope keys sign'
    update_manifest(read_bundle(trained), metrics={"x": 1})

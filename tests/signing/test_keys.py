"""The key store and trust decisions (no bundle involved)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from flawscope.errors import InputError
from flawscope.signing import KeyStore, TrustPolicy, public_pem, sign
from flawscope.signing.keys import ENV_VAR, default_dir

DOMAIN = "test-document-v1"


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys")


def test_the_first_signature_creates_a_key_readable_only_by_its_owner(store: KeyStore):
    assert store.list_keys() == []
    signature = sign(b"body", DOMAIN, store)
    (key,) = store.list_keys()
    assert key.key_id == signature.key_id and key.has_private and not key.revoked_at
    private = store.folder / f"{key.key_id}.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.folder.stat().st_mode) == 0o700
    assert b"PRIVATE KEY" in private.read_bytes()
    # The same key signs next time: no new key per document.
    assert sign(b"other", DOMAIN, store).key_id == key.key_id


def test_the_key_store_folder_comes_from_the_environment(monkeypatch, tmp_path: Path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "elsewhere"))
    assert default_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert default_dir() == tmp_path / "cfg" / "flawscope" / "keys"


def test_a_signature_is_accepted_only_for_its_own_bytes_and_domain(store: KeyStore):
    signature = sign(b"body", DOMAIN, store)
    policy = TrustPolicy.local(store)
    assert policy.check(signature, b"body", DOMAIN) == ""
    assert "does not match its content" in policy.check(signature, b"body!", DOMAIN)
    assert "does not match its content" in policy.check(signature, b"body", "another-kind-v1")
    assert policy.check(None, b"body", DOMAIN) == "it is not signed"


def test_a_key_of_another_machine_is_not_trusted_until_told(store: KeyStore, tmp_path: Path):
    other = KeyStore(tmp_path / "other")
    signature = sign(b"body", DOMAIN, other)
    assert "not trusted by the key store" in TrustPolicy.local(store).check(signature, b"body", DOMAIN)
    exported = tmp_path / "other.pub"
    exported.write_bytes(public_pem(other.signing_key()[0].public))
    store.trust(exported)
    assert TrustPolicy.local(store).check(signature, b"body", DOMAIN) == ""


def test_a_station_trust_store_accepts_only_its_keys(store: KeyStore, tmp_path: Path):
    mine = sign(b"body", DOMAIN, store)
    other = KeyStore(tmp_path / "other")
    theirs = sign(b"body", DOMAIN, other)
    folder = tmp_path / "trusted"
    folder.mkdir()
    (folder / "line-engineer.pub").write_bytes(public_pem(other.signing_key()[0].public))
    policy = TrustPolicy.from_path(folder, store)
    assert policy.check(theirs, b"body", DOMAIN) == ""
    # Restricted: even this machine's own key is not trusted by that station.
    problem = policy.check(mine, b"body", DOMAIN)
    assert f"key {mine.key_id}, which is not trusted by the trust store" in problem
    assert TrustPolicy.from_path(folder / "line-engineer.pub", store).check(theirs, b"body", DOMAIN) == ""


def test_a_forged_signature_naming_a_trusted_key_is_refused(store: KeyStore, tmp_path: Path):
    from dataclasses import replace

    trusted = sign(b"body", DOMAIN, store)
    forged = replace(sign(b"evil", DOMAIN, KeyStore(tmp_path / "attacker")), key_id=trusted.key_id)
    assert "names key" in TrustPolicy.local(store).check(forged, b"evil", DOMAIN)
    swapped = replace(trusted, value=sign(b"evil", DOMAIN, KeyStore(tmp_path / "attacker")).value)
    assert "does not match" in TrustPolicy.local(store).check(swapped, b"evil", DOMAIN)


def test_a_revoked_key_is_refused_and_the_next_signature_uses_a_new_key(store: KeyStore):
    old = sign(b"body", DOMAIN, store)
    revoked = store.revoke(old.key_id[:6], "laptop stolen")
    assert revoked.key_id == old.key_id and revoked.revoke_reason == "laptop stolen"
    problem = TrustPolicy.local(store).check(old, b"body", DOMAIN)
    assert f"key {old.key_id}, which was revoked (laptop stolen" in problem
    new = sign(b"body", DOMAIN, store)
    assert new.key_id != old.key_id and TrustPolicy.local(store).check(new, b"body", DOMAIN) == ""
    assert json.loads((store.folder / "revoked.json").read_text())[old.key_id]["reason"] == "laptop stolen"


def test_a_key_of_another_machine_can_be_revoked_by_its_full_id(store: KeyStore, tmp_path: Path):
    theirs = sign(b"body", DOMAIN, KeyStore(tmp_path / "other"))
    store.revoke(theirs.key_id, "left the company")
    folder = tmp_path / "trusted"
    folder.mkdir()
    (folder / "k.pub").write_bytes(public_pem(KeyStore(tmp_path / "other").signing_key()[0].public))
    assert "was revoked" in TrustPolicy.from_path(folder, store).check(theirs, b"body", DOMAIN)


@pytest.mark.parametrize(
    ("action", "problem"),
    [
        (lambda s, p: s.revoke("nope", "x"), "no such key"),
        (lambda s, p: s.revoke("0123456789abcdef", " "), "say why"),
        (lambda s, p: TrustPolicy.from_path(p / "missing", s), "trust store not found"),
        (lambda s, p: TrustPolicy.from_path(p, s), "holds no public key"),
        (lambda s, p: s.trust(p / "nothing.pub"), "cannot read the public key"),
    ],
)
def test_mistakes_are_named(store: KeyStore, tmp_path: Path, action, problem):
    with pytest.raises(InputError, match=problem):
        action(store, tmp_path)


def test_a_file_that_is_not_a_public_key_is_named(store: KeyStore, tmp_path: Path):
    bad = tmp_path / "bad.pub"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    with pytest.raises(InputError, match=r"bad\.pub: is not an Ed25519 public key"):
        store.trust(bad)

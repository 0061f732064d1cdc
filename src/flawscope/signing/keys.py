"""The user's Ed25519 signing keys: a folder of key files, created on first use.

Layout of the key store (``$FLAWSCOPE_KEYS``, else ``$XDG_CONFIG_HOME/flawscope/keys``, else
``~/.config/flawscope/keys``; the folder is mode 0700)::

    <key_id>.key      private key, PKCS#8 PEM, mode 0600 (never leaves the machine)
    <key_id>.json     public key (base64), creation time, name
    trusted/*.pub     public keys of other machines this one trusts (``flawscope keys trust``)
    revoked.json      key ids revoked here, with when and why: never trusted again on this machine

A key's id is the first 16 hex digits of the SHA-256 of its raw 32-byte public key. The id only
names a key: trust decisions compare the whole public key.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from flawscope.errors import InputError

log = logging.getLogger(__name__)

ENV_VAR = "FLAWSCOPE_KEYS"
REVOKED = "revoked.json"
TRUSTED = "trusted"
ALGORITHM = "ed25519"


def key_id(public_raw: bytes) -> str:
    """The id of a public key: 16 hex digits of the SHA-256 of its 32 raw bytes."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def public_raw(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_pem(public: bytes) -> bytes:
    """PEM (SubjectPublicKeyInfo) text of a raw public key, the format ``keys export`` writes."""
    key = Ed25519PublicKey.from_public_bytes(public)
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def read_public_file(path: str | os.PathLike[str]) -> bytes:
    """Raw public key from a PEM file (as ``keys export`` writes) or a file holding its base64.

    Raises:
        InputError: naming the file, when it holds no Ed25519 public key.
    """
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise InputError(file, f"cannot read the public key ({exc.strerror or exc})") from None
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_public_key(data)
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("not an Ed25519 key")
            return public_raw(key)
        raw = base64.b64decode(data.strip(), validate=True)
        Ed25519PublicKey.from_public_bytes(raw)
        return raw
    except ValueError as exc:
        raise InputError(file, f"is not an Ed25519 public key ({exc})") from None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def default_dir() -> Path:
    """The key store folder: ``$FLAWSCOPE_KEYS``, else the user's config folder."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "flawscope" / "keys"


@dataclass(frozen=True)
class KeyInfo:
    """A key of the store, as ``flawscope keys list`` shows it.

    Attributes:
        key_id: 16 hex digits naming the key.
        public: raw 32-byte public key.
        created_at: ISO 8601 time of creation (UTC).
        name: a label the user gave.
        has_private: the private key is in this store (a key made here), not only its public half.
        revoked_at: when it was revoked here (``""``: not revoked).
        revoke_reason: why.
    """

    key_id: str
    public: bytes
    created_at: str
    name: str
    has_private: bool
    revoked_at: str = ""
    revoke_reason: str = ""

    @property
    def public_b64(self) -> str:
        """The raw public key in base64."""
        return base64.b64encode(self.public).decode()


def _write_private(path: Path, data: bytes, mode: int) -> None:
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(handle, mode)
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class KeyStore:
    """The folder of signing keys of this user on this machine.

    Args:
        folder: the key store folder (default: :func:`default_dir`); created when a key is made.
    """

    def __init__(self, folder: str | os.PathLike[str] | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_dir()

    def _ensure(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            (self.folder / TRUSTED).mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:
            raise InputError(self.folder, f"cannot create the key store ({exc.strerror or exc})") from None

    # ------------------------------------------------------------------------------- reading

    def revoked(self) -> dict[str, dict[str, str]]:
        """Revoked key ids -> ``{"revoked_at", "reason"}``."""
        path = self.folder / REVOKED
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            # A revocation list that cannot be read must not silently trust everything again.
            raise InputError(path, f"the revocation list cannot be read ({exc})") from None
        if not isinstance(data, dict):
            raise InputError(path, "the revocation list must be a JSON object of key id -> details")
        return {str(k): dict(v) for k, v in data.items()}

    def _own(self) -> Iterator[KeyInfo]:
        if not self.folder.is_dir():
            return
        revoked = self.revoked()
        for meta_path in sorted(self.folder.glob("*.json")):
            if meta_path.name == REVOKED:
                continue
            try:
                meta = json.loads(meta_path.read_text())
                public = base64.b64decode(meta["public_key"], validate=True)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise InputError(meta_path, f"key description cannot be read ({exc})") from None
            kid = key_id(public)
            gone = revoked.get(kid, {})
            yield KeyInfo(
                kid,
                public,
                str(meta.get("created_at", "")),
                str(meta.get("name", "")),
                (self.folder / f"{kid}.key").is_file(),
                str(gone.get("revoked_at", "")),
                str(gone.get("reason", "")),
            )

    def _trusted(self) -> Iterator[KeyInfo]:
        folder = self.folder / TRUSTED
        if not folder.is_dir():
            return
        revoked = self.revoked()
        for path in sorted(folder.glob("*.pub")):
            public = read_public_file(path)
            kid = key_id(public)
            gone = revoked.get(kid, {})
            when, why = str(gone.get("revoked_at", "")), str(gone.get("reason", ""))
            yield KeyInfo(kid, public, "", path.stem, False, when, why)

    def list_keys(self) -> list[KeyInfo]:
        """Every key of the store: made here (with a private key) or trusted from elsewhere."""
        return [*self._own(), *self._trusted()]

    def find(self, kid: str) -> KeyInfo:
        """The key with this id (or a unique prefix of it).

        Raises:
            InputError: no such key, or the prefix names several.
        """
        found = [k for k in self.list_keys() if k.key_id.startswith(kid.strip())] if kid.strip() else []
        if len(found) != 1:
            problem = "no such key" if not found else "the prefix names several keys"
            raise InputError(f"key {kid!r}", f"{problem} in the key store {self.folder}")
        return found[0]

    # ------------------------------------------------------------------------------- writing

    def create(self, name: str = "") -> KeyInfo:
        """Make a new Ed25519 key pair in the store (private key file mode 0600)."""
        self._ensure()
        private = Ed25519PrivateKey.generate()
        public = public_raw(private.public_key())
        kid = key_id(public)
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        created = _now()
        _write_private(self.folder / f"{kid}.key", pem, 0o600)
        meta = {"key_id": kid, "algorithm": ALGORITHM, "public_key": base64.b64encode(public).decode()}
        meta |= {"created_at": created, "name": name}
        _write_private(self.folder / f"{kid}.json", json.dumps(meta, indent=2).encode(), 0o644)
        log.info("created signing key %s in %s", kid, self.folder)
        return KeyInfo(kid, public, created, name, True)

    def signing_key(self, create: bool = True) -> tuple[KeyInfo, Ed25519PrivateKey]:
        """The key this user signs with: the newest non-revoked key made here, created on first use.

        Raises:
            InputError: no usable key and ``create`` is false, or the private key cannot be read.
        """
        usable = [k for k in self._own() if k.has_private and not k.revoked_at]
        if not usable:
            if not create:
                raise InputError(self.folder, "no signing key: create one with 'flawscope keys create'")
            usable = [self.create()]
        info = max(usable, key=lambda k: k.created_at)
        path = self.folder / f"{info.key_id}.key"
        try:
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise InputError(path, f"the private key cannot be read ({exc})") from None
        if not isinstance(private, Ed25519PrivateKey) or public_raw(private.public_key()) != info.public:
            raise InputError(path, "the private key does not match its public key description")
        return info, private

    def revoke(self, kid: str, reason: str) -> KeyInfo:
        """Revoke a key on this machine: nothing it signed is trusted here any more.

        ``kid`` may name a key of this store (or a unique prefix) or, in full (16 hex digits), any
        key, e.g. one that signed bundles shipped to this station.
        """
        if not reason.strip():
            raise InputError("reason", "say why the key is revoked")
        try:
            info = self.find(kid)
        except InputError:
            if len(kid) != 16 or any(c not in "0123456789abcdef" for c in kid):
                raise
            info = KeyInfo(kid, b"", "", "", False)
        self._ensure()
        revoked = self.revoked()
        revoked[info.key_id] = {"revoked_at": _now(), "reason": reason.strip()}
        _write_private(self.folder / REVOKED, json.dumps(revoked, indent=2, sort_keys=True).encode(), 0o644)
        entry = revoked[info.key_id]
        return dataclasses.replace(info, revoked_at=entry["revoked_at"], revoke_reason=entry["reason"])

    def trust(self, public_file: str | os.PathLike[str]) -> KeyInfo:
        """Trust another machine's public key here (copied into ``trusted/``)."""
        public = read_public_file(public_file)
        self._ensure()
        kid = key_id(public)
        _write_private(self.folder / TRUSTED / f"{kid}.pub", public_pem(public), 0o644)
        return KeyInfo(kid, public, _now(), kid, False)

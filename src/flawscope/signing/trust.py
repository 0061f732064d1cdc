"""Ed25519 signatures over canonical bytes, and which keys a machine trusts.

A :class:`Signature` travels with what it signs (a bundle manifest, an exported audit head) and
names its key. Whether it is accepted is a :class:`TrustPolicy`'s decision:

- by default (``TrustPolicy.local()``) the keys made on this machine and the public keys the user
  trusted with ``flawscope keys trust``, minus those revoked here;
- restricted (``TrustPolicy.from_path(PATH)``, a station's trust store): only the public keys in
  that file or folder (``*.pub`` / ``*.pem`` files), minus those revoked in this machine's key
  store.

Every signed byte string starts with a domain tag (``flawscope-bundle-manifest-v2``...), so a
signature made for one kind of document can never be passed off as one of another kind.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from flawscope.errors import InputError
from flawscope.signing.keys import ALGORITHM, KeyStore, key_id, read_public_file


@dataclass(frozen=True)
class Signature:
    """A detached Ed25519 signature and the key that made it.

    Attributes:
        key_id: 16 hex digits naming the key (see :func:`~flawscope.signing.keys.key_id`).
        public_key: the raw public key, base64.
        value: the 64-byte signature, base64.
        signed_at: ISO 8601 time of signing (UTC); informative, inside nothing signed.
        algorithm: ``"ed25519"``.
    """

    key_id: str
    public_key: str
    value: str
    signed_at: str = ""
    algorithm: str = ALGORITHM


def _domain(domain: str, body: bytes) -> bytes:
    return domain.encode("ascii") + b"\n" + body


def sign(body: bytes, domain: str, store: KeyStore | None = None) -> Signature:
    """Sign ``body`` with the user's key (created on first use).

    Args:
        body: the canonical bytes of the document.
        domain: what kind of document it is (part of the signed bytes).
        store: the key store (default: the user's).
    """
    _, private = (store or KeyStore()).signing_key()
    return sign_with(private, body, domain)


def sign_with(private: Ed25519PrivateKey, body: bytes, domain: str) -> Signature:
    """Sign ``body`` with a given private key (see :func:`sign`)."""
    from flawscope.signing.keys import public_raw

    public = public_raw(private.public_key())
    return Signature(
        key_id=key_id(public),
        public_key=base64.b64encode(public).decode(),
        value=base64.b64encode(private.sign(_domain(domain, body))).decode(),
        signed_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


@dataclass(frozen=True)
class TrustPolicy:
    """The public keys whose signatures this machine accepts.

    Attributes:
        trusted: key id -> raw public key.
        revoked: key id -> why it was revoked (never accepted, even if listed in ``trusted``).
        source: where the trusted keys come from, for messages.
    """

    trusted: Mapping[str, bytes]
    revoked: Mapping[str, str] = field(default_factory=dict)
    source: str = ""

    @classmethod
    def local(cls, store: KeyStore | None = None) -> TrustPolicy:
        """This machine's keys and the keys it was told to trust, minus revoked ones."""
        store = store or KeyStore()
        revoked = _revocations(store)
        trusted = {k.key_id: k.public for k in store.list_keys()}
        return cls(trusted, revoked, f"the key store {store.folder}")

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], store: KeyStore | None = None) -> TrustPolicy:
        """Only the public keys in a trust store (one key file, or a folder of ``*.pub``/``*.pem``).

        Keys revoked in this machine's key store stay refused.

        Raises:
            InputError: the path does not exist, holds no key, or holds a file that is not one.
        """
        where = Path(path)
        if where.is_dir():
            files = sorted(p for p in where.iterdir() if p.suffix in (".pub", ".pem") and p.is_file())
            if not files:
                raise InputError(where, "the trust store holds no public key (*.pub or *.pem files)")
        elif where.is_file():
            files = [where]
        else:
            raise InputError(where, "trust store not found (give a public key file or a folder of them)")
        trusted = {}
        for file in files:
            public = read_public_file(file)
            trusted[key_id(public)] = public
        return cls(trusted, _revocations(store or KeyStore()), f"the trust store {where}")

    @classmethod
    def choose(cls, trusted_keys: str | os.PathLike[str] | None) -> TrustPolicy:
        """``from_path(trusted_keys)`` when a trust store is given, else ``local()``."""
        return cls.local() if trusted_keys is None else cls.from_path(trusted_keys)

    def check(self, signature: Signature | None, body: bytes, domain: str) -> str:
        """Why ``signature`` is not acceptable for ``body`` here (``""``: it is).

        The reasons, in the order they are checked: no signature, an unknown algorithm, a revoked
        key, a key this policy does not trust, and a signature that does not match the bytes.
        """
        if signature is None:
            return "it is not signed"
        if signature.algorithm != ALGORITHM:
            return f"its signature uses {signature.algorithm!r}, not {ALGORITHM}"
        try:
            public = base64.b64decode(signature.public_key, validate=True)
            value = base64.b64decode(signature.value, validate=True)
        except (binascii.Error, ValueError):
            return "its signature is malformed (not base64)"
        kid = key_id(public)
        if kid != signature.key_id:
            return f"its signature names key {signature.key_id} but carries key {kid}"
        if kid in self.revoked:
            return f"it is signed by key {kid}, which was revoked ({self.revoked[kid]})"
        if self.trusted.get(kid) != public:
            return f"it is signed by key {kid}, which is not trusted by {self.source}"
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(value, _domain(domain, body))
        except (InvalidSignature, ValueError):
            return f"its signature by key {kid} does not match its content (altered after signing)"
        return ""


def _revocations(store: KeyStore) -> dict[str, str]:
    revoked = store.revoked().items()
    return {kid: f"{v.get('reason', '')}, at {v.get('revoked_at', '?')}" for kid, v in revoked}

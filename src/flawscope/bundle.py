"""The self-describing model bundle: a folder with ``manifest.json`` and the files it lists.

Torch-free, so the deployed runtime reads the same manifest as training. The manifest's content is
the typed record :class:`flawscope.manifest.Manifest`; this module writes and reads its file: the
format envelope (``format``, ``format_version``), the SHA-256 of every listed file, and the SHA-256
of the manifest's own canonical JSON, so an altered, missing or swapped file (or a hand-edited
manifest) is refused on load. That hash detects change, not who made it: the manifest's Ed25519
``signature`` (:mod:`flawscope.signing`) is what says who made it.

Thresholds are an append-only list of versions inside the manifest; a new calibration adds a
version and never edits an old one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flawscope import __version__
from flawscope.data.imageio import sha256_file
from flawscope.decide.thresholds import ThresholdHistory
from flawscope.errors import BundleError, InputError
from flawscope.manifest import FORMAT, FORMAT_VERSION, Manifest
from flawscope.signing import TrustPolicy, sign

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
#: What a bundle signature signs (part of the signed bytes: it cannot be taken for another document's).
DOMAIN = "flawscope-bundle-manifest-v2"
#: Keys of the manifest file that are not part of the :class:`Manifest` record.
ENVELOPE = ("format", "format_version", "manifest_sha256")


def sha256_bytes(data: bytes) -> str:
    """SHA-256 hex digest of bytes."""
    return hashlib.sha256(data).hexdigest()


def canonical_json(data: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, no spaces) for hashing."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()


def _manifest_hash(raw: dict[str, Any]) -> str:
    return sha256_bytes(canonical_json({k: v for k, v in raw.items() if k != "manifest_sha256"}))


def signed_body(raw: dict[str, Any]) -> bytes:
    """The bytes a manifest's signature covers: its canonical JSON without the signature and hash.

    That is everything it says: model, preprocessing, training, every threshold version, metrics,
    the deploy section and the SHA-256 of every file (so the graph and weights too).
    """
    return canonical_json({k: v for k, v in raw.items() if k not in ("signature", "manifest_sha256")})


def versions() -> dict[str, str]:
    """Versions of the software a bundle was made with."""
    found = {"flawscope": __version__, "python": platform.python_version()}
    for module in ("numpy", "torch", "onnx", "onnxruntime", "cv2"):
        try:
            found[module] = str(__import__(module).__version__)
        except Exception:  # an absent or broken package is simply not listed
            continue
    return found


@dataclass(frozen=True)
class Bundle:
    """A loaded (verified) bundle folder.

    Attributes:
        path: the folder.
        manifest: its manifest, upgraded to the current format.
        signed_bytes: what the manifest's signature covers, as read from the file (empty for a
            format that had no signatures).
    """

    path: Path
    manifest: Manifest
    signed_bytes: bytes = field(default=b"", repr=False)

    @property
    def model_hash(self) -> str:
        """SHA-256 of the learned weights file: the model's identity in verdicts and the audit trail."""
        return self.manifest.model_hash

    @property
    def thresholds(self) -> ThresholdHistory:
        """All threshold versions, oldest first."""
        return self.manifest.thresholds

    @property
    def version(self) -> str:
        """Human-readable version: model hash prefix and active threshold version."""
        return self.manifest.version_label()

    def file(self, name: str) -> Path:
        """Path of a listed file."""
        if name not in self.manifest.files:
            raise BundleError(f"{self.path}: bundle has no file {name!r}")
        return self.path / name


def write_bundle(
    path: str | os.PathLike[str], manifest: Manifest, files: dict[str, bytes], *, signed: bool = True
) -> Bundle:
    """Write a bundle folder: the given files and a manifest listing their hashes, signed.

    Files already in the folder and listed in ``manifest.files`` are kept and re-hashed.

    Args:
        path: bundle folder (created if needed).
        manifest: the manifest; its ``files`` are filled in (any signature in it is replaced).
        files: new file name -> content.
        signed: sign the manifest with the user's key (created on first use); ``False`` only for
            tests and tools that make unsigned bundles on purpose.

    Returns:
        The written bundle.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    listed = dict(manifest.files)
    for name in [*files, *listed]:
        _check_name(folder, name)
    for name, data in files.items():
        _atomic_write(folder / name, data)
        listed[name] = sha256_bytes(data)
    for name in listed:
        if name not in files:
            if not (folder / name).is_file():
                raise BundleError(f"{folder / name}: file listed in the manifest is missing")
            listed[name] = sha256_file(folder / name)
    return _write_manifest(folder, dataclasses.replace(manifest, files=listed), signed)


def _write_manifest(folder: Path, manifest: Manifest, signed: bool = True) -> Bundle:
    content = dataclasses.replace(manifest, signature=None).to_dict()
    try:
        # Read back before writing: a field of the wrong type fails here, naming it, not at load.
        manifest = Manifest.from_dict(content)
    except InputError as exc:
        raise BundleError(f"{folder / MANIFEST}: not written: {exc}") from None
    raw = {"format": FORMAT, "format_version": FORMAT_VERSION, **content}
    if signed:
        signature = sign(signed_body(raw), DOMAIN)
        raw["signature"] = dataclasses.asdict(signature)
        manifest = dataclasses.replace(manifest, signature=signature)
    raw["manifest_sha256"] = _manifest_hash(raw)
    _atomic_write(folder / MANIFEST, json.dumps(raw, indent=2, sort_keys=True, allow_nan=True).encode())
    return Bundle(folder, manifest, signed_body(raw))


def _check_name(folder: Path, name: object) -> None:
    # Listed files must be plain names inside the bundle folder: a manifest cannot point elsewhere.
    if not isinstance(name, str) or name in ("", ".", "..", MANIFEST) or Path(name).name != name:
        raise BundleError(f"{folder / MANIFEST}: invalid file name {name!r} in the manifest's file list")


def _atomic_write(target: Path, data: bytes) -> None:
    handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        # mkstemp creates the file owner-only (0600); a bundle is copied to line PCs and read by
        # service accounts, so give it the permissions any new file would get under the umask.
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    # Read, not set-and-restore: os.umask() would briefly change it for every thread of the process.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def read_bundle(path: str | os.PathLike[str], verify: bool = True) -> Bundle:
    """Open a bundle folder, check its integrity and read its manifest (upgrading an older format).

    Raises:
        BundleError: naming the folder and what is wrong (missing, altered, wrong format, a field
            of the manifest that is unknown, missing or mistyped).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise BundleError(f"{folder}: not a bundle folder (it does not exist or is a file)")
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{folder}: not a bundle: {MANIFEST} is missing")
    try:
        raw = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path}: manifest is not valid JSON ({exc})") from None
    except OSError as exc:
        raise BundleError(f"{manifest_path}: manifest cannot be read ({exc.strerror})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise BundleError(f"{manifest_path}: not a flawscope bundle manifest")
    version = raw.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError(f"{manifest_path}: format_version must be a whole number, got {version!r}")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{manifest_path}: bundle format {version} is newer than this flawscope reads "
            f"({FORMAT_VERSION}); upgrade flawscope to load it"
        )
    files = raw.get("files", {})
    if not isinstance(files, dict):
        raise BundleError(f"{manifest_path}: the manifest's file list must be a mapping of name to SHA-256")
    for name in files:
        _check_name(folder, name)
    if verify:
        if raw.get("manifest_sha256") != _manifest_hash(raw):
            raise BundleError(f"{manifest_path}: manifest was altered (its content hash does not match)")
        for name, digest in files.items():
            target = folder / name
            if not target.is_file():
                raise BundleError(f"{target}: file listed in the manifest is missing")
            if sha256_file(target) != digest:
                raise BundleError(f"{target}: file was altered (SHA-256 does not match the manifest)")
    body = {k: v for k, v in raw.items() if k not in ENVELOPE}
    try:
        manifest = Manifest.from_dict(body, version)
    except InputError as exc:
        raise BundleError(f"{manifest_path}: {exc}") from None
    return Bundle(folder, manifest, signed_body(raw) if version >= 2 else b"")


def update_manifest(bundle: Bundle, **changes: Any) -> Bundle:
    """Rewrite the manifest with some of its fields changed.

    The bundle is re-read and verified first, and the file hashes it verified are the ones kept
    (nothing on disk is re-hashed into the manifest). Fields not in ``changes`` keep their current
    on-disk values, so unrelated updates made meanwhile are not lost.

    Args:
        bundle: the bundle as it was read when the changes were computed.
        **changes: :class:`~flawscope.manifest.Manifest` fields to set (not ``files`` or ``signature``).

    Raises:
        BundleError: when the bundle no longer verifies, is not signed by a key trusted here (the
            rewritten manifest is signed with the user's key), or its files changed since
            ``bundle`` was read (e.g. it was re-trained meanwhile), so the changes may not apply.
    """
    reserved = {"files", "signature"} & set(changes)
    if reserved:
        raise ValueError(f"update_manifest cannot change {sorted(reserved)}")
    unknown = set(changes) - {f.name for f in dataclasses.fields(Manifest)}
    if unknown:
        raise ValueError(f"update_manifest: the manifest has no field(s) {sorted(unknown)}")
    fresh = read_bundle(bundle.path)
    # Re-signing what someone else changed would launder it: the bundle must be trusted as it is.
    check_trust(fresh)
    if dict(fresh.manifest.files) != dict(bundle.manifest.files):
        raise BundleError(
            f"{bundle.path}: the bundle's files changed since it was loaded (re-trained or re-exported?); "
            "not updating its manifest with results computed from the old files"
        )
    return _write_manifest(fresh.path, dataclasses.replace(fresh.manifest, **changes))


@dataclasses.dataclass(frozen=True)
class Trust:
    """Whether a bundle's signature is accepted here, and by whom it was made.

    Attributes:
        signer: id of the key whose signature was verified (``""``: none was).
        problem: why the signature is not accepted (``""``: it is).
        allow_unsigned: the bundle was accepted without a trusted signature on request.
    """

    signer: str
    problem: str = ""
    allow_unsigned: bool = False


def _hint(problem: str) -> str:
    if "not signed" in problem:
        return (
            "if you vouch for its content, sign it with 'flawscope keys sign BUNDLE'; "
            "for development only, use --allow-unsigned"
        )
    if "not trusted" in problem:
        return "trust its signer's key ('flawscope keys trust FILE') or add it to the station's trust store"
    if "revoked" in problem:
        return "have it signed again by a key that is not revoked"
    return "it was changed after it was signed; export it again from the trained bundle"


def check_trust(
    bundle: Bundle,
    trusted_keys: str | os.PathLike[str] | None = None,
    *,
    allow_unsigned: bool = False,
) -> Trust:
    """Check a bundle's signature: a key trusted here, not revoked, over exactly this manifest.

    The manifest lists every file's SHA-256 and every threshold version, so the signature covers
    the graph, the weights and the thresholds (:func:`signed_body`).

    Args:
        bundle: a bundle read (and integrity-checked) by :func:`read_bundle`.
        trusted_keys: a trust store (public key file or folder) to accept only its keys; default:
            this machine's keys and the keys trusted with ``flawscope keys trust``.
        allow_unsigned: accept a bundle without a trusted signature (development); the returned
            record says so, and the audit records made with it carry that flag.

    Raises:
        BundleError: naming the bundle and the reason, when the signature is missing, wrong, or
            from an untrusted or revoked key (unless ``allow_unsigned``).
    """
    problem = TrustPolicy.choose(trusted_keys).check(bundle.manifest.signature, bundle.signed_bytes, DOMAIN)
    if not problem:
        assert bundle.manifest.signature is not None
        return Trust(bundle.manifest.signature.key_id, "", allow_unsigned)
    if not allow_unsigned:
        raise BundleError(f"{bundle.path}: refused because {problem}; {_hint(problem)}")
    log.warning("%s: loaded although %s (--allow-unsigned: for development only)", bundle.path, problem)
    return Trust("", problem, True)


def resign_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Sign an intact bundle's manifest with the user's key, whoever signed it before (``keys sign``).

    Raises:
        BundleError: the bundle is missing or altered (its integrity hashes do not match).
    """
    fresh = read_bundle(path)
    return _write_manifest(fresh.path, fresh.manifest)

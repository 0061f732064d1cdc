"""The unit of re-inspection work: score one chunk of archived image files with one bundle.

Runs wherever the engine puts it: in the calling process (``local``) or in a Ray worker process.
The bundle travels as its files' bytes and is written once per process under a folder named by
its manifest hash, so workers need no shared file system for the model, only for the images.
It travels with the public key of the signer the driver checked it against, and each worker
checks the signature again with that key (and refuses a key revoked on its own machine). Each
process keeps its loaded inspector between chunks.

A file that cannot be read gives an ``error`` result (recorded, never a pass); so does a part
whose inference fails.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flawscope.bundle import MANIFEST
from flawscope.reinspect.bundle_cache import materialise, signer_key

logger = logging.getLogger(__name__)
BATCH = 8

_lock = threading.Lock()
_inspectors: dict[str, Any] = {}


@dataclass(frozen=True)
class ChunkResult:
    """What scoring one archived image gave (a plain record, cheap to send between processes).

    Attributes:
        key: the image's path relative to the archive root (its identity in the store).
        image_sha256: SHA-256 of the file's bytes ("" when it could not be read at all).
        outcome: ``pass``/``review``/``fail``, or ``error`` when the file or its inference failed.
        score: raw anomaly score (NaN when not scored).
        normalized_score: score / reject threshold (NaN when not scored).
        regions: number of defect regions found.
        reason: why (the rule that fired, or the error).
        worker: the process that scored it (host:pid).
    """

    key: str
    image_sha256: str
    outcome: str
    score: float
    normalized_score: float
    regions: int
    reason: str
    worker: str


@dataclass(frozen=True)
class BundlePayload:
    """A deployable bundle as it travels to workers.

    Attributes:
        files: file name -> bytes (the manifest included).
        signer_pem: the public key (PEM) the driver verified the signature with; None for an
            unsigned bundle accepted with ``allow_unsigned``.
        allow_unsigned: load without a trusted signature (development only).
    """

    files: Mapping[str, bytes]
    signer_pem: bytes | None
    allow_unsigned: bool = False

    @property
    def digest(self) -> str:
        """SHA-256 of the manifest: the bundle's identity on the workers."""
        return hashlib.sha256(self.files[MANIFEST]).hexdigest()


def bundle_payload(
    path: str | os.PathLike[str],
    trusted_keys: str | os.PathLike[str] | None = None,
    *,
    allow_unsigned: bool = False,
) -> BundlePayload:
    """A deployable bundle's files, after checking its signature here, to ship to workers.

    Raises:
        BundleError: a missing or altered bundle, or a signature that is missing, wrong, or by an
            untrusted or revoked key (unless ``allow_unsigned``).
    """
    import base64

    from flawscope.bundle import check_trust, read_bundle
    from flawscope.signing import public_pem

    bundle = read_bundle(path)
    trust = check_trust(bundle, trusted_keys, allow_unsigned=allow_unsigned)
    signature = bundle.manifest.signature
    pem = public_pem(base64.b64decode(signature.public_key)) if trust.signer and signature else None
    names = [MANIFEST, *bundle.manifest.files]
    files = {name: (bundle.path / name).read_bytes() for name in names}
    return BundlePayload(files, pem, allow_unsigned=trust.allow_unsigned)


def _inspector(payload: BundlePayload, threads: int | None) -> Any:
    from flawscope.runtime import Inspector

    key = f"{payload.digest}/{threads}"
    with _lock:
        found = _inspectors.get(key)
        if found is None:
            folder = materialise(payload.digest, payload.files)
            trust = None
            if payload.signer_pem is not None:
                trust = signer_key(folder)
                if not trust.is_file():
                    trust.write_bytes(payload.signer_pem)
            found = Inspector.load(
                folder, threads=threads, trusted_keys=trust, allow_unsigned=payload.allow_unsigned
            )
            _inspectors.clear()  # one bundle per process at a time
            _inspectors[key] = found
        return found


def _read(path: Path) -> tuple[np.ndarray | None, str, str]:
    """``(image or None, sha256 of the bytes, error)``."""
    from flawscope.data.imageio import read_image

    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, "", f"{path}: cannot read the file ({exc.strerror or exc})"
    digest = hashlib.sha256(data).hexdigest()
    try:
        return read_image(path), digest, ""
    except Exception as exc:  # any decoder failure is this file's problem, recorded as an error
        return None, digest, str(exc)


def score_chunk(
    payload: BundlePayload, root: str, keys: Sequence[str], threads: int | None = 1
) -> list[ChunkResult]:
    """Score the archived images ``root/key`` with the bundle in ``payload``.

    Args:
        payload: the deployable bundle's files (:func:`bundle_payload`).
        root: the archive folder, as the worker sees it.
        keys: image paths relative to ``root``.
        threads: ONNX Runtime intra-op threads of this process's inspector.

    Returns:
        One result per key, in order.
    """
    from flawscope.types import Outcome

    inspector = _inspector(payload, threads)
    worker = f"{os.uname().nodename}:{os.getpid()}"
    results: list[ChunkResult] = []
    for start in range(0, len(keys), BATCH):
        part = keys[start : start + BATCH]
        read = [_read(Path(root) / key) for key in part]
        verdicts = inspector.inspect_many([image for image, _, _ in read])
        for key, (image, digest, problem), verdict in zip(part, read, verdicts, strict=True):
            if image is None:
                outcome, reason = Outcome.ERROR.value, problem or verdict.reason
            else:
                outcome, reason = verdict.outcome.value, verdict.reason
            results.append(
                ChunkResult(
                    key=key,
                    image_sha256=digest,
                    outcome=outcome,
                    score=float(verdict.score),
                    normalized_score=float(verdict.normalized_score),
                    regions=len(verdict.regions),
                    reason=reason,
                    worker=worker,
                )
            )
    return results

"""The audit chain's head, signed and exported, so truncation and recomputation can be detected later.

The hash chain alone proves that records were not altered between two records, not that the end of
the log was not cut off or that someone with write access to the database did not recompute every
hash after an edit (the algorithm is public). A head ``(seq, record_hash)`` signed with the user's
Ed25519 key and kept outside the database (a file copied off the machine, a shift report) pins the
log as it was then: ``flawscope audit verify --signed-head FILE`` refuses a log that no longer
contains that exact record at that ``seq``.

The file is JSON: ``format``, ``version``, ``seq``, ``record_hash``, ``database`` (its URL without
password), ``exported_at`` and ``signature`` over the canonical JSON of the rest.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flawscope.audit.verify import ChainHead
from flawscope.errors import InputError
from flawscope.signing import KeyStore, Signature, TrustPolicy, sign

FORMAT = "flawscope-audit-head"
DOMAIN = "flawscope-audit-head-v1"


def _body(doc: dict[str, Any]) -> bytes:
    rest = {k: v for k, v in doc.items() if k != "signature"}
    return json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def signed_head(head: ChainHead, database: str, store: KeyStore | None = None) -> dict[str, Any]:
    """The signed head document of a log (signed with the user's key, created on first use).

    Args:
        head: the log's head (``AuditLog.head()``).
        database: the log's URL without password (informative).
        store: the key store (default: the user's).
    """
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": 1,
        "seq": int(head.seq),
        "record_hash": str(head.record_hash),
        "database": database,
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    doc["signature"] = asdict(sign(_body(doc), DOMAIN, store))
    return doc


def write_signed_head(path: str | os.PathLike[str], doc: dict[str, Any]) -> Path:
    """Write a signed head document (replaced atomically)."""
    target = Path(path)
    if not target.parent.is_dir():
        raise InputError(target, f"cannot write the head: directory {target.parent} does not exist")
    temp = target.with_name(f".{target.name}.partial")
    try:
        temp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        os.replace(temp, target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise InputError(target, f"cannot write the head ({exc.strerror or exc})") from None
    return target


def read_signed_head(path: str | os.PathLike[str], policy: TrustPolicy | None = None) -> ChainHead:
    """Read a signed head and check its signature.

    Args:
        path: the file ``flawscope audit head --sign`` wrote.
        policy: whose signatures are accepted (default: this machine's keys).

    Raises:
        InputError: naming the file, when it is not a head, or its signature is missing, wrong, or
            from a key that is not trusted or was revoked.
    """
    where = Path(path)
    try:
        doc = json.loads(where.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(where, f"cannot read the signed head ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != 1:
        raise InputError(where, "is not a flawscope signed audit head")
    seq, digest = doc.get("seq"), doc.get("record_hash")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or not isinstance(digest, str):
        raise InputError(where, "the head's seq or record_hash is malformed")
    raw = doc.get("signature")
    try:
        signature = Signature(**raw) if isinstance(raw, dict) else None
    except TypeError:
        signature = None
    problem = (policy or TrustPolicy.local()).check(signature, _body(doc), DOMAIN)
    if problem:
        raise InputError(where, f"the head is not trusted: {problem}")
    return ChainHead(seq, digest)

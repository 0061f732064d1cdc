"""Where a worker machine keeps the bundles shipped to it, and how that folder stays bounded.

Each bundle is written once per machine under ``$FLAWSCOPE_BUNDLE_CACHE`` (default
``<temp>/flawscope-bundles``), in a folder named by its manifest's hash, so the processes of one
machine share it. A folder's modification time is its last use: every process that loads the
bundle touches it. When a new bundle is written, the least recently used ones beyond the newest
``$FLAWSCOPE_BUNDLE_CACHE_KEEP`` (default :data:`DEFAULT_KEEP`; ``0`` keeps every bundle) are
removed, but never one used in the last :data:`IDLE_S` seconds: another process of the machine
may be between writing it and loading it. A process that finds its bundle removed writes it again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from flawscope.bundle import MANIFEST

CACHE_ENV = "FLAWSCOPE_BUNDLE_CACHE"
KEEP_ENV = "FLAWSCOPE_BUNDLE_CACHE_KEEP"
DEFAULT_KEEP = 4
# A bundle used this recently is never removed, whatever the count: a machine re-inspecting with
# several bundles at once (several runs) keeps them all while they are in use.
IDLE_S = 600.0
# A staging folder this old was left by a process killed while writing a bundle.
STALE_STAGING_S = 3600.0
_DIGEST = re.compile(r"^[0-9a-f]{24}$")
log = logging.getLogger(__name__)


def bundle_cache() -> Path:
    """Where this machine keeps the bundles shipped to it.

    ``$FLAWSCOPE_BUNDLE_CACHE``, else ``<temp>/flawscope-bundles``; a Ray worker reads the
    environment its node was started with.
    """
    chosen = os.environ.get(CACHE_ENV)
    return Path(chosen) if chosen else Path(tempfile.gettempdir()) / "flawscope-bundles"


def cache_keep() -> int:
    """How many bundles a machine keeps: ``$FLAWSCOPE_BUNDLE_CACHE_KEEP``, 0 for all.

    A value that is not a whole number >= 0 is logged, naming the variable, and keeps every
    bundle: a cache setting never stops an inspection, and never removes what it was not meant to.
    """
    raw = os.environ.get(KEEP_ENV, "").strip()
    if not raw:
        return DEFAULT_KEEP
    if not raw.isdigit():
        log.warning(
            "$%s must be a whole number of bundles >= 0 (0 keeps all), got %r: keeping all", KEEP_ENV, raw
        )
        return 0
    return int(raw)


def materialise(digest: str, files: Mapping[str, bytes]) -> Path:
    """The bundle's folder on this machine: written once (atomically), touched on every use.

    Args:
        digest: the bundle's identity (its manifest's SHA-256, hex); the folder is named by its
            first 24 digits.
        files: file name -> bytes, the manifest included.
    """
    digest = digest[:24]
    cache = bundle_cache()
    root = cache / digest
    if (root / MANIFEST).is_file():
        _touch(root)
        return root
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=cache))
    for name, data in files.items():
        (staging / Path(name).name).write_bytes(data)
    if root.is_dir() and not (root / MANIFEST).is_file():
        shutil.rmtree(root, ignore_errors=True)  # a partial folder: not written by this code
    try:
        os.rename(staging, root)
    except OSError:  # another process of this machine got there first: use theirs
        shutil.rmtree(staging, ignore_errors=True)
    _touch(root)
    prune(cache, cache_keep(), keep_also=root)
    return root


def prune(cache: Path, keep: int, keep_also: Path | None = None, now: float | None = None) -> list[Path]:
    """Remove the least recently used bundles beyond ``keep``, and stale staging folders.

    Args:
        cache: the cache folder.
        keep: bundles kept, the most recently used; 0 keeps every bundle.
        keep_also: a bundle never removed (the one being used).
        now: the time to judge idleness by (default: now).

    Returns:
        The bundle folders removed.
    """
    now = time.time() if now is None else now
    for staging in cache.glob(".*-*"):
        if staging.is_dir() and now - staging.stat().st_mtime > STALE_STAGING_S:
            shutil.rmtree(staging, ignore_errors=True)
    if keep <= 0:
        return []
    bundles = [p for p in cache.iterdir() if p.is_dir() and _DIGEST.match(p.name)]
    bundles.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    removed = []
    for old in bundles[keep:]:
        if old == keep_also or now - old.stat().st_mtime < IDLE_S:
            continue
        shutil.rmtree(old, ignore_errors=True)
        signer_key(old).unlink(missing_ok=True)
        removed.append(old)
    return removed


def signer_key(folder: Path) -> Path:
    """Where the public key a bundle was shipped with lies, beside its folder (removed with it)."""
    return folder.with_name(f"{folder.name}.signer.pub")


def _touch(folder: Path) -> None:
    # removed meanwhile by another process's pruning: its next use writes it again
    with contextlib.suppress(OSError):
        os.utime(folder)

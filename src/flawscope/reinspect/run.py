"""Re-inspect an archive of stored part images with a (candidate) bundle, locally or on Ray.

The driver walks the archive folder in sorted order, cuts it into chunks, skips the images the
store already holds for this (archive, model, thresholds) and hands the rest to an engine:

* ``local``: chunks are scored one after another in this process (all cores to ONNX Runtime).
* ``ray``: chunks are Ray tasks, each worker process scoring with one ONNX Runtime thread; a
  local Ray instance on 127.0.0.1 is started when no ``address`` is given. A task whose worker
  dies is retried by Ray; its results are written by the driver, through the idempotent store,
  so nothing is missing or doubled. When the cluster itself goes, the job stops with a clear
  error; what was stored stays, and running the same command again finishes the rest.

Results are written as each chunk completes, so a job stopped at any point has lost at most the
chunks in flight.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flawscope.bundle import read_bundle
from flawscope.data.imageio import is_image_file
from flawscope.errors import FlawscopeError, InputError
from flawscope.reinspect.store import ResultStore, Scope
from flawscope.reinspect.worker import ChunkResult, bundle_payload, score_chunk

logger = logging.getLogger(__name__)
ENGINES = ("local", "ray")
Progress = Callable[[int, int], None]


class ReinspectError(FlawscopeError):
    """The job could not finish; the results stored so far stay, and running it again resumes it."""


@dataclass(frozen=True)
class ReinspectSummary:
    """What a re-inspection job did.

    Attributes:
        archive: the archive's identity in the store.
        images: image files found in the archive.
        already_done: of them, results already stored before this run (skipped).
        scored: images scored in this run.
        written: new rows written (equals ``scored`` unless another job wrote some meanwhile).
        outcomes: results per outcome in the store for this scope, after the run.
        ignored: files in the archive that are not images (by suffix), not scored.
        seconds: wall time.
        engine: ``local`` or ``ray``.
        workers: CPU slots used.
        scope: the store scope written.
    """

    archive: str
    images: int
    already_done: int
    scored: int
    written: int
    outcomes: dict[str, int]
    ignored: int
    seconds: float
    engine: str
    workers: int
    scope: Scope = field(repr=False)

    @property
    def throughput(self) -> float:
        """Images scored per second in this run."""
        return self.scored / self.seconds if self.seconds > 0 else 0.0


def walk_archive(root: Path) -> Iterator[tuple[str, bool]]:
    """``(path relative to root, is an image file)`` of every visible file, in sorted order, lazily."""
    for current, folders, files in os.walk(root):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        base = Path(current)
        for name in sorted(files):
            if name.startswith("."):
                continue
            relative = (base / name).relative_to(root).as_posix()
            yield relative, is_image_file(name)


def _chunks(root: Path, size: int, counts: dict[str, int]) -> Iterator[list[str]]:
    chunk: list[str] = []
    for key, image in walk_archive(root):
        if not image:
            counts["ignored"] += 1
            continue
        counts["images"] += 1
        chunk.append(key)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _scope(root: Path, bundle_path: Path, job: str | None) -> tuple[Scope, Any]:
    bundle = read_bundle(bundle_path)
    manifest = bundle.manifest
    if manifest.deploy is None:
        raise InputError(bundle_path, "not a deployable bundle; run 'flawscope export' on it first")
    thresholds = manifest.select_thresholds()
    if thresholds is None:
        raise InputError(bundle_path, "bundle has no calibrated thresholds, so it cannot give verdicts")
    label = manifest.version_label(thresholds.version)
    name = job or f"reinspect {root} with {label}"
    return Scope(str(root), bundle.model_hash, thresholds.version, label, name), bundle


def reinspect(
    archive: str | os.PathLike[str],
    bundle: str | os.PathLike[str],
    store_url: str,
    *,
    engine: str = "local",
    address: str | None = None,
    chunk_size: int = 64,
    workers: int | None = None,
    job: str | None = None,
    progress: Progress | None = None,
    trusted_keys: str | os.PathLike[str] | None = None,
    allow_unsigned: bool = False,
) -> ReinspectSummary:
    """Score every image of an archive folder with a deployable bundle and store the results.

    Args:
        archive: folder of stored images (searched recursively; non-image files are ignored).
        bundle: deployable bundle (from ``flawscope export``), e.g. a candidate model.
        store_url: audit database URL; results go to its ``reinspections`` table.
        engine: ``"local"`` or ``"ray"``.
        address: Ray cluster address (``HOST:PORT``); None starts a local Ray on 127.0.0.1.
        chunk_size: images per task.
        workers: CPU slots of a local Ray instance (default: all cores).
        job: a name for the job in the store.
        progress: called with ``(images done, images found so far)``.
        trusted_keys: trust store for the bundle's signature (default: this machine's keys); the
            workers check the signature again with the signer's key.
        allow_unsigned: accept a bundle without a trusted signature (development only).

    Returns:
        The summary.

    Raises:
        InputError: for a missing archive, a bundle that cannot give verdicts, an unknown engine,
            or a store that cannot be opened.
        BundleError: for an altered bundle or one without a trusted signature.
        ReinspectError: when the Ray cluster cannot be reached or goes away mid-job (the results
            stored so far stay; run again to resume).
    """
    if engine not in ENGINES:
        raise InputError("engine", f"must be one of {', '.join(ENGINES)}, got {engine!r}")
    if address and engine != "ray":
        raise InputError("address", "a Ray address needs --engine ray")
    if chunk_size < 1:
        raise InputError("chunk_size", f"must be >= 1, got {chunk_size}")
    root = Path(archive).expanduser().absolute()
    if not root.is_dir():
        raise InputError(root, "archive folder does not exist" if not root.exists() else "is not a folder")
    scope, loaded = _scope(root, Path(bundle), job)
    payload = bundle_payload(loaded.path, trusted_keys, allow_unsigned=allow_unsigned)
    counts = {"images": 0, "ignored": 0, "done": 0, "scored": 0, "written": 0}
    started = time.perf_counter()
    with ResultStore.open(store_url) as store:

        def pending() -> Iterator[list[str]]:
            for chunk in _chunks(root, chunk_size, counts):
                done = store.done(scope, chunk)
                counts["done"] += len(done)
                todo = [key for key in chunk if key not in done]
                if todo:
                    yield todo

        def stored(results: Sequence[ChunkResult]) -> None:
            counts["written"] += store.write(scope, results)
            counts["scored"] += len(results)
            if progress is not None:
                progress(counts["scored"] + counts["done"], counts["images"])

        if engine == "local":
            slots = 1
            for todo in pending():
                stored(score_chunk(payload, str(root), todo, threads=None))
        else:
            from flawscope.reinspect.ray_engine import run_on_ray

            slots = run_on_ray(payload, str(root), pending(), stored, address=address, workers=workers)
        outcomes = store.outcomes(scope)
    summary = ReinspectSummary(
        archive=scope.archive,
        images=counts["images"],
        already_done=counts["done"],
        scored=counts["scored"],
        written=counts["written"],
        outcomes=outcomes,
        ignored=counts["ignored"],
        seconds=time.perf_counter() - started,
        engine=engine,
        workers=slots,
        scope=scope,
    )
    logger.info(
        "re-inspected %d of %d images of %s in %.1f s (%s)",
        summary.scored,
        summary.images,
        root,
        summary.seconds,
        engine,
    )
    return summary

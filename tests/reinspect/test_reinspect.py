"""Re-inspection of an archive: local and on a real Ray cluster, idempotent, resumable, fail-safe."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from flawscope.errors import InputError
from flawscope.reinspect.run import ReinspectError, reinspect
from flawscope.reinspect.store import ResultStore, Scope
from flawscope.reinspect.worker import ChunkResult

from .conftest import start_ray_head


def _rows(url: str, scope: Scope) -> dict[str, dict]:
    with ResultStore.open(url) as store:
        return {row["image_key"]: row for row in store.results(scope)}


def test_store_writes_each_key_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    scope = Scope("/a", "m" * 64, 1, "v", "job")
    rows = [ChunkResult(f"k{i}", "s", "pass", 1.0, 0.5, 0, "", "w") for i in range(5)]
    with ResultStore.open(url) as store:
        assert store.write(scope, rows) == 5
        assert store.write(scope, [*rows[2:], ChunkResult("k9", "s", "fail", 3.0, 1.5, 1, "", "w")]) == 1
        assert store.count(scope) == 6
        assert store.done(scope, ["k0", "k7", "k9"]) == {"k0", "k9"}
        other = Scope("/a", "m" * 64, 2, "v", "job")  # another threshold version is another result
        assert store.write(other, rows[:1]) == 1
        assert store.outcomes(scope) == {"pass": 5, "fail": 1}


def test_a_machine_keeps_shipped_bundles_where_it_is_told(archive, tmp_path: Path, monkeypatch) -> None:
    from flawscope.reinspect.bundle_cache import CACHE_ENV, bundle_cache, materialise
    from flawscope.reinspect.worker import bundle_payload

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    assert bundle_cache() == tmp_path / "cache"
    payload = bundle_payload(archive.bundle)
    folder = materialise(payload.digest, payload.files)
    assert folder.parent == tmp_path / "cache" and folder.name == payload.digest[:24]
    assert sorted(p.name for p in folder.iterdir()) == sorted(payload.files)
    assert materialise(payload.digest, payload.files) == folder  # written once
    monkeypatch.delenv(CACHE_ENV)
    assert bundle_cache().name == "flawscope-bundles"


def test_local_engine_records_unreadable_files_and_resumes(archive, tmp_path: Path) -> None:
    from flawscope.runtime import Inspector

    url = f"sqlite:///{tmp_path / 'r.db'}"
    summary = reinspect(archive.root, archive.bundle, url, chunk_size=16)
    assert summary.images == archive.images and summary.ignored == 1  # notes.txt
    assert summary.scored == summary.written == archive.images
    rows = _rows(url, summary.scope)
    broken = rows["2026-11-01/part-broken.png"]
    assert broken["outcome"] == "error" and "part-broken.png" in broken["reason"]
    assert broken["score"] is None
    # The same verdicts as the runtime gives image by image.
    inspector = Inspector.load(archive.bundle)
    from flawscope.data.imageio import read_image

    for key in sorted(rows)[:20]:
        if key.endswith("broken.png"):
            continue
        verdict = inspector.inspect(read_image(archive.root / key))
        assert rows[key]["outcome"] == verdict.outcome.value
        assert rows[key]["score"] == pytest.approx(float(verdict.score), rel=1e-6)
    # A second run finds everything done and writes nothing.
    again = reinspect(archive.root, archive.bundle, url, chunk_size=16)
    assert again.already_done == archive.images and again.scored == 0 and again.written == 0


def test_bad_arguments_are_clear(archive, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with pytest.raises(InputError, match="does not exist"):
        reinspect(tmp_path / "nowhere", archive.bundle, url)
    with pytest.raises(InputError, match="engine"):
        reinspect(archive.root, archive.bundle, url, engine="spark")
    with pytest.raises(InputError, match="--engine ray"):
        reinspect(archive.root, archive.bundle, url, address="127.0.0.1:1")


def test_a_bundle_without_a_trusted_signature_is_refused(archive, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from flawscope.errors import BundleError

    stranger = tmp_path / "stranger.pub"
    stranger.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with pytest.raises(BundleError, match="not trusted"):
        reinspect(archive.root, archive.bundle, url, trusted_keys=stranger)


def test_unreachable_cluster_fails_fast_and_clearly(archive, tmp_path: Path) -> None:
    from .conftest import free_port

    started = time.monotonic()
    with pytest.raises(ReinspectError, match=r"cannot reach the Ray cluster at 127\.0\.0\.1:\d+"):
        reinspect(
            archive.root,
            archive.bundle,
            f"sqlite:///{tmp_path / 'r.db'}",
            engine="ray",
            address=f"127.0.0.1:{free_port()}",
        )
    assert time.monotonic() - started < 30


def test_ray_gives_the_local_verdicts_and_survives_a_killed_worker(archive, ray_head, tmp_path: Path) -> None:
    local_url, ray_url = f"sqlite:///{tmp_path / 'local.db'}", f"sqlite:///{tmp_path / 'ray.db'}"
    local = reinspect(archive.root, archive.bundle, local_url, chunk_size=8)
    killed: list[int] = []

    def kill_a_worker(done: int, _found: int) -> None:
        # After the first chunks are stored, SIGKILL a worker process: busy if one is, else any.
        if killed or done < 24:
            return
        for _ in range(50):
            workers = ray_head.workers()
            busy = [pid for pid, title in workers if "score_chunk" in title]
            if busy or workers:
                killed.append((busy or [pid for pid, _ in workers])[0])
                os.kill(killed[0], signal.SIGKILL)
                return
            time.sleep(0.05)

    summary = reinspect(
        archive.root,
        archive.bundle,
        ray_url,
        engine="ray",
        address=ray_head.address,
        chunk_size=8,
        progress=kill_a_worker,
    )
    assert killed, "no worker process was found to kill"
    assert summary.engine == "ray" and summary.workers == 2
    assert summary.scored == archive.images and summary.written == archive.images
    local_rows, ray_rows = _rows(local_url, local.scope), _rows(ray_url, summary.scope)
    assert set(ray_rows) == set(local_rows) and len(ray_rows) == archive.images  # nothing missing
    for key, row in local_rows.items():
        assert ray_rows[key]["outcome"] == row["outcome"], key
        assert ray_rows[key]["image_sha256"] == row["image_sha256"]
        if row["score"] is not None:
            assert ray_rows[key]["score"] == row["score"], key  # bit-identical scores


def test_a_cluster_dying_mid_job_is_a_clear_error_and_the_job_resumes(archive, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    head = start_ray_head()
    try:

        def kill_cluster(done: int, _found: int) -> None:
            if done >= 16 and head.process.poll() is None:
                os.killpg(head.process.pid, signal.SIGKILL)  # the whole cluster, at once

        with pytest.raises(ReinspectError, match="run the same command again"):
            reinspect(
                archive.root,
                archive.bundle,
                url,
                engine="ray",
                address=head.address,
                chunk_size=8,
                progress=kill_cluster,
            )
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        head.stop()
    with ResultStore.open(url) as store:
        scope_rows = list(store._engine.connect().exec_driver_sql("select count(*) from reinspections"))
    partial = int(scope_rows[0][0])
    assert 0 < partial < archive.images
    # Resume on a new cluster: only the rest is scored, and nothing is doubled.
    second = start_ray_head()
    try:
        summary = reinspect(
            archive.root, archive.bundle, url, engine="ray", address=second.address, chunk_size=8
        )
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        second.stop()
    assert summary.already_done == partial and summary.scored == archive.images - partial
    assert sum(summary.outcomes.values()) == archive.images
    assert np.isfinite(summary.seconds)

"""A worker machine's bundle folder: each bundle written once, the least recently used pruned."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from flawscope.bundle import MANIFEST
from flawscope.reinspect.bundle_cache import (
    CACHE_ENV,
    DEFAULT_KEEP,
    IDLE_S,
    KEEP_ENV,
    STALE_STAGING_S,
    cache_keep,
    materialise,
    prune,
)


def _bundle(n: int) -> tuple[str, dict[str, bytes]]:
    files = {MANIFEST: f'{{"bundle": {n}}}'.encode(), "model.onnx": bytes([n]) * 10}
    return hashlib.sha256(files[MANIFEST]).hexdigest(), files


def _age(folder: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(folder, (then, then))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(KEEP_ENV, raising=False)
    return tmp_path / "cache"


def test_a_bundle_is_written_once_and_each_use_marks_it_used(cache: Path) -> None:
    digest, files = _bundle(1)
    folder = materialise(digest, files)
    assert folder == cache / digest[:24]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files
    _age(folder, 5000)
    (folder / "model.onnx").write_bytes(b"kept")  # not rewritten on the next use
    assert materialise(digest, files) == folder
    assert (folder / "model.onnx").read_bytes() == b"kept"
    assert time.time() - folder.stat().st_mtime < 60  # touched: used now
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no staging left


def test_the_least_recently_used_bundles_beyond_the_count_are_removed(cache: Path, monkeypatch) -> None:
    monkeypatch.setenv(KEEP_ENV, "2")
    folders = []
    for n in range(4):
        digest, files = _bundle(n)
        folders.append(materialise(digest, files))
        folders[-1].with_name(f"{folders[-1].name}.signer.pub").write_bytes(b"key")
        _age(folders[-1], IDLE_S + 1000 - n)  # bundle 0 the least recently used
    digest, files = _bundle(9)
    newest = materialise(digest, files)
    left = sorted(p.name for p in cache.iterdir() if not p.name.endswith(".pub"))
    # the newest and the most recently used of the older ones stay
    assert left == sorted([newest.name, folders[3].name])
    assert not folders[0].with_name(f"{folders[0].name}.signer.pub").exists()
    assert folders[3].with_name(f"{folders[3].name}.signer.pub").exists()


def test_a_bundle_used_recently_stays_whatever_the_count(cache: Path, monkeypatch) -> None:
    monkeypatch.setenv(KEEP_ENV, "1")
    first = materialise(*_bundle(1))  # used just now (another process may be loading it)
    second = materialise(*_bundle(2))
    assert first.is_dir() and second.is_dir()
    _age(first, IDLE_S + 1)
    assert prune(cache, 1, keep_also=second) == [first]
    assert not first.exists() and second.is_dir()


def test_zero_keeps_every_bundle(cache: Path, monkeypatch) -> None:
    monkeypatch.setenv(KEEP_ENV, "0")
    for n in range(3):
        _age(materialise(*_bundle(n)), IDLE_S * 10)
    materialise(*_bundle(7))
    assert len([p for p in cache.iterdir()]) == 4


def test_a_removed_bundle_is_written_again_on_its_next_use(cache: Path) -> None:
    digest, files = _bundle(1)
    folder = materialise(digest, files)
    _age(folder, IDLE_S + 1)
    assert prune(cache, 1, keep_also=None, now=time.time()) == []  # the only one: within the count
    (folder / MANIFEST).unlink()  # half removed, as by a crash
    assert materialise(digest, files) == folder
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files


def test_staging_left_by_a_killed_process_is_removed_once_stale(cache: Path) -> None:
    materialise(*_bundle(1))
    stale, fresh = cache / ".abc-stale", cache / ".abc-fresh"
    stale.mkdir(), fresh.mkdir()
    _age(stale, STALE_STAGING_S + 10)
    prune(cache, DEFAULT_KEEP)
    assert not stale.exists() and fresh.is_dir()


def test_the_count_is_read_from_the_environment_and_a_bad_one_keeps_all(monkeypatch, caplog) -> None:
    monkeypatch.delenv(KEEP_ENV, raising=False)
    assert cache_keep() == DEFAULT_KEEP
    monkeypatch.setenv(KEEP_ENV, " 7 ")
    assert cache_keep() == 7
    for bad in ("-1", "two", "1.5"):
        monkeypatch.setenv(KEEP_ENV, bad)
        caplog.clear()
        assert cache_keep() == 0  # keeps every bundle
        assert KEEP_ENV in caplog.text and repr(bad) in caplog.text

"""A read-only file system is named as such, before any work, by every command that writes.

Each command runs in its own user and mount namespace (``unshare``) with the output folder
bind-mounted read-only onto itself, so no root rights are needed; the test is skipped where the
kernel does not allow that.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MOUNT = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && exec "$@"'


def _unshare_works(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run(["unshare", "-rm", "sh", "-c", MOUNT, probe, "true"], capture_output=True)
    return done.returncode == 0


def _run_on_read_only(ro: Path, *args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    command = [sys.executable, "-m", "flawscope.cli", *map(str, args)]
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", MOUNT, ro, *command],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_every_writing_command_names_the_read_only_file_system(trained, tmp_path: Path):
    if not _unshare_works(tmp_path):
        pytest.skip("unshare -rm cannot bind-mount a folder read-only here (user namespaces not allowed)")
    ro = tmp_path / "ro"
    ro.mkdir()
    bundle = Path(shutil.copytree(trained.bundle, ro / "bundle"))
    cases = {
        "train": ["train", trained.data, "-o", ro / "new-bundle", "--image-size", "64"],
        "export": ["export", trained.bundle, "-o", ro / "deploy"],
        "evaluate": ["evaluate", trained.bundle, trained.data, "--json", ro / "m.json"],
        "calibrate": ["calibrate", bundle, "--holdout-of", trained.data],
        "evaluate in place": ["evaluate", bundle, trained.data],
        "audit": ["inspect", trained.deploy, "--source", trained.data / "test", "--audit", f"sqlite:///{ro}/a.db"],
        "images": [
            "inspect", trained.deploy, "--source", trained.data / "test",
            "--audit", f"sqlite:///{tmp_path}/a.db", "--store-images", ro / "images",
        ],
    }  # fmt: skip
    for name, args in cases.items():
        done = _run_on_read_only(ro, *args, cwd=tmp_path)
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert done.returncode == 2 and "Traceback" not in done.stderr, (name, done.stderr)
        assert len(errors) == 1 and "read-only file system" in errors[0].lower(), (name, done.stderr)
    assert not (tmp_path / "a.db").exists()  # the image store was refused before the database was made

"""A tiny deployable bundle, an archive of stored part images, and a real Ray head on 127.0.0.1.

The Ray head is started with ``ray start --head --block`` in its own process group (two CPU
slots, so two worker processes; no dashboard; every server on 127.0.0.1) and stopped by killing
that group after the tests that use it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

CANVAS = 64
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Archive:
    """A deployable bundle and an archive folder of images to re-inspect with it."""

    bundle: Path
    root: Path
    images: int


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import torch

    from flawscope.data.synthetic import SyntheticSpec, write_dataset
    from flawscope.decide.workflow import calibrate_bundle
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.train import train

    torch.set_num_threads(2)
    folder = tmp_path_factory.mktemp("reinspect")
    spec = SyntheticSpec(size=(CANVAS, CANVAS), n_train=40, n_test_good=12, n_test_defect_per_type=3, seed=3)
    dataset = write_dataset(folder / "data", spec)
    result = train(dataset, folder / "trained", model="padim", holdout=0.25, params={"image_size": CANVAS})
    calibrate_bundle(folder / "trained", result.holdout_images, target_frr=0.1)
    export_bundle(folder / "trained", folder / "deployed")
    return folder / "deployed", Path(dataset.root)


def make_archive(root: Path, dataset: Path, copies: int) -> int:
    """An image-store-like archive: ``<day>/<part>.png`` copies of the dataset's images, one broken file."""
    sources = sorted(dataset.rglob("*.png"))
    sources = [p for p in sources if "ground_truth" not in p.parts]
    n = 0
    for copy in range(copies):
        day = root / f"2026-11-{copy + 1:02d}"
        day.mkdir(parents=True, exist_ok=True)
        for source in sources:
            n += 1
            shutil.copyfile(source, day / f"part-{n:05d}.png")
    (root / "2026-11-01" / "part-broken.png").write_bytes(b"not an image")
    (root / "notes.txt").write_text("not an image file: ignored")
    return n + 1


@pytest.fixture
def archive(tiny_bundle: tuple[Path, Path], tmp_path: Path) -> Archive:
    bundle, dataset = tiny_bundle
    return Archive(bundle, tmp_path / "archive", make_archive(tmp_path / "archive", dataset, 2))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class RayHead:
    """A running Ray head: its address and the process group to kill."""

    address: str
    process: subprocess.Popen[bytes]
    temp: Path

    def workers(self) -> list[tuple[int, str]]:
        """``(pid, title)`` of the cluster's Python worker processes.

        Workers run in sessions of their own; they are the ``ray::`` processes (not the agents)
        whose parent, the raylet, is in the head's process group.
        """
        listing = subprocess.run(["ps", "-eo", "pid,ppid,pgid,args"], capture_output=True, text=True).stdout
        rows = {
            int(r[0]): r for r in (line.split(None, 3) for line in listing.splitlines()[1:]) if len(r) == 4
        }
        group = str(self.process.pid)
        return [
            (pid, r[3])
            for pid, r in rows.items()
            if r[3].startswith("ray::")
            and "Agent" not in r[3]
            and rows.get(int(r[1]), ("", "", ""))[2] == group
        ]

    def stop(self) -> None:
        """Kill the whole cluster (its process group), SIGTERM then SIGKILL, and remove its folder."""
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self.process.poll() is None:
                time.sleep(0.1)
        self.process.wait(timeout=10)
        # Workers run in sessions of their own and may still write their logs for a moment after
        # the head is gone: remove the folder until it stays removed (it was left in /tmp before).
        deadline = time.monotonic() + 10
        while self.temp.exists() and time.monotonic() < deadline:
            shutil.rmtree(self.temp, ignore_errors=True)
            time.sleep(0.2)


def start_ray_head(cpus: int = 2) -> RayHead:
    ray = Path(sys.executable).with_name("ray")
    if not ray.is_file():
        pytest.skip("Ray is not installed (pip install 'flawscope[scale]')")
    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="fsray-", dir="/tmp"))  # short: Ray's socket paths have a limit
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")  # servers on 127.0.0.1, not the LAN
    command = [str(ray), "start", "--head", "--block", f"--node-ip-address={HOST}", f"--port={port}"]
    command += [
        f"--num-cpus={cpus}",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp}",
    ]
    process = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    head = RayHead(f"{HOST}:{port}", process, temp)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            shutil.rmtree(temp, ignore_errors=True)
            pytest.skip(f"the Ray head did not start (exit code {process.returncode})")
        if list(temp.glob("session_*/sockets/raylet*")):
            try:
                with socket.create_connection((HOST, port), timeout=1):
                    break
            except OSError:
                pass
        time.sleep(0.5)
    else:
        head.stop()
        pytest.skip("the Ray head did not come up within 90 s")
    return head


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    head = start_ray_head()
    try:
        yield head
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        head.stop()

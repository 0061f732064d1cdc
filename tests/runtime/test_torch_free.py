"""The runtime in a fresh venv without torch: same verdict as in the full environment; start-up time."""

from __future__ import annotations

import fcntl
import hashlib
import json
import subprocess
import sys
import time
import venv
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("inspect_one.py")
# flawscope's core dependencies (pyproject), without the "train" extra that brings torch.
RUNTIME_PACKAGES = (
    "numpy",
    "opencv-python-headless",
    "pillow",
    "onnxruntime",
    "tifffile",
    "scipy",
    "safetensors",
    "threadpoolctl",
    "cryptography",
)


def _run(python: Path | str, bundle: Path, image: Path) -> dict:
    start = time.perf_counter()
    proc = subprocess.run(
        [str(python), str(SCRIPT), str(bundle), str(image)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    report["seconds"]["process_wall"] = wall
    return report


@pytest.fixture(scope="session")
def torch_free_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv (no system site-packages) with only the runtime's packages and flawscope (--no-deps, editable).

    Kept next to pytest's session folders, so later sessions reuse it; a lock stops two sessions
    building it at once.
    """
    # One venv per checkout: it holds an editable install of REPO, and a venv built for another
    # checkout (since moved or deleted) would import nothing.
    checkout = hashlib.sha256(str(REPO).encode()).hexdigest()[:10]
    home = (
        tmp_path_factory.getbasetemp().parent
        / f"flawscope-runtime-venv-py{sys.version_info[0]}{sys.version_info[1]}-{checkout}"
    )
    home.mkdir(parents=True, exist_ok=True)
    python = home / "venv" / "bin" / "python"
    ready = home / "ready"
    with open(home / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        wanted = " ".join(RUNTIME_PACKAGES) + f"\n{REPO}\n"
        if not ready.is_file() or ready.read_text() != wanted:
            try:
                venv.EnvBuilder(with_pip=True, clear=True, system_site_packages=False).create(home / "venv")
            except Exception as exc:  # no ensurepip on this Python: skip, with the reason
                pytest.skip(f"cannot create a venv with pip here: {exc}")
            for args in ([*RUNTIME_PACKAGES], ["--no-deps", "-e", str(REPO)]):
                proc = subprocess.run(
                    [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
                if proc.returncode != 0:
                    pytest.skip(
                        f"pip could not install {' '.join(args)} (no registry?): {proc.stderr[-800:]}"
                    )
            ready.write_text(wanted)
    return python


@pytest.mark.slow
def test_runtime_needs_no_torch_and_gives_the_same_verdict(deployed, torch_free_python, tmp_path):
    image = tmp_path / "part.npy"
    np.save(image, deployed.defective[0])
    bare = _run(torch_free_python, deployed.path, image)
    full = _run(sys.executable, deployed.path, image)

    assert bare["heavy_modules_loaded"] == [], "the runtime imported training-side packages"
    assert bare["torch_importable"] is False  # torch really is absent from that venv
    assert full["torch_importable"] is True
    got, want = bare["verdict"], full["verdict"]
    assert got["outcome"] == want["outcome"] and got["outcome"] in ("pass", "review", "fail")
    assert got["score"] == pytest.approx(want["score"], rel=1e-4)
    assert (got["model_hash"], got["threshold_version"]) == (want["model_hash"], want["threshold_version"])
    assert [r["area_px"] for r in got["regions"]] == pytest.approx(
        [r["area_px"] for r in want["regions"]], abs=2
    )
    print(
        f"\ntorch-free venv (onnxruntime {bare['onnxruntime']}): {got['outcome']} score {got['score']:.4g}; "
        f"main venv (onnxruntime {full['onnxruntime']}): {want['outcome']} score {want['score']:.4g}; "
        f"third-party packages the runtime imported: {', '.join(bare['third_party_loaded'])}"
    )


@pytest.mark.slow
def test_start_up_time_is_measured(deployed, torch_free_python, tmp_path):
    """Process start to first verdict, in a fresh process (reported, not asserted: the CPU is shared)."""
    image = tmp_path / "part.npy"
    np.save(image, deployed.good[0])
    for label, python in (("torch-free venv", torch_free_python), ("main venv", sys.executable)):
        report = _run(python, deployed.path, image)
        seconds = report["seconds"]
        assert 0 < seconds["import"] < seconds["total"]
        print(
            f"\n{label}: import {seconds['import']:.3f} s, load {seconds['load']:.3f} s, "
            f"first verdict {seconds['first_verdict']:.3f} s, total {seconds['total']:.3f} s, "
            f"peak RSS {report['max_rss_mb']:.0f} MB "
            f"(process start to exit, with the 'import torch' probe: {seconds['process_wall']:.3f} s)"
        )

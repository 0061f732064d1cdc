"""The line from the command line: inspect a folder, then verify and export the audit trail."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from flawscope.data.synthetic import SyntheticSpec, write_dataset


def flawscope(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flawscope.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    root = tmp_path_factory.mktemp("line-cli")
    data = write_dataset(
        root / "data",
        SyntheticSpec(size=(64, 64), n_train=30, n_test_good=6, n_test_defect_per_type=2, seed=3),
    )
    trained = flawscope(
        "train", data.root, "-o", str(root / "bundle"), "--image-size", "64", "--holdout", "0.4"
    )
    assert trained.returncode == 0, trained.stderr
    exported = flawscope("export", str(root / "bundle"), "-o", str(root / "deploy"))
    assert exported.returncode == 0, exported.stderr
    return root, data


def test_inspect_records_every_part_and_the_log_verifies(deployed, tmp_path):
    root, data = deployed
    folder = f"{data.root}/test/good"
    audit = f"sqlite:///{tmp_path / 'audit.db'}"
    run = flawscope(
        "inspect",
        str(root / "deploy"),
        "--source",
        folder,
        "--audit",
        audit,
        "--store-images",
        str(tmp_path / "images"),
    )
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    with sqlite3.connect(tmp_path / "audit.db") as db:
        (n,) = db.execute("select count(*) from inspections").fetchone()
    assert n == len(data.test_good)
    assert len(list((tmp_path / "images").rglob("*.*"))) == n

    ok = flawscope("audit", "verify", "--audit", audit)
    assert ok.returncode == 0 and "intact" in ok.stdout

    exported = flawscope("audit", "export", "--audit", audit, "-o", str(tmp_path / "records.csv"))
    assert exported.returncode == 0, exported.stderr
    assert len((tmp_path / "records.csv").read_text().strip().splitlines()) == n + 1

    with sqlite3.connect(tmp_path / "audit.db") as db:
        db.execute("update inspections set outcome = 'pass' where seq = 2 and outcome != 'pass'")
        db.execute("update inspections set score = score + 1 where seq = 2")
    bad = flawscope("audit", "verify", "--audit", audit)
    assert bad.returncode == 1
    assert "seq=2" in bad.stdout


def test_inspect_refuses_a_trained_bundle_that_is_not_exported(deployed, tmp_path):
    root, data = deployed
    run = flawscope(
        "inspect",
        str(root / "bundle"),
        "--source",
        f"{data.root}/test/good",
        "--audit",
        f"sqlite:///{tmp_path / 'a.db'}",
    )
    assert run.returncode == 2
    assert "export" in run.stderr and "Traceback" not in run.stderr


def test_inspect_unknown_source_is_one_clear_line(deployed, tmp_path):
    root, _ = deployed
    run = flawscope(
        "inspect",
        str(root / "deploy"),
        "--source",
        "ftp://nowhere",
        "--audit",
        f"sqlite:///{tmp_path / 'a.db'}",
    )
    assert run.returncode == 2
    assert "unknown source" in run.stderr and "Traceback" not in run.stderr

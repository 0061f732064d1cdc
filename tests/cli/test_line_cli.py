"""The line from the command line: inspect a folder, then verify and export the audit trail.

On the session's trained and exported bundle (``trained`` in conftest.py).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from types import SimpleNamespace

import pytest


def flawscope(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flawscope.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.fixture(scope="module")
def deployed(trained):
    """The session's trained bundle (``bundle``) and its export (``deploy``), and the dataset."""
    return trained.root, SimpleNamespace(
        root=trained.data, test_good=sorted((trained.data / "test" / "good").iterdir())
    )


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
        (flagged,) = db.execute("select count(*) from inspections where outcome != 'pass'").fetchone()
    assert n == len(data.test_good)
    # Every part's image is kept, and the anomaly map of each part that did not pass beside it.
    stored = list((tmp_path / "images").rglob("*.*"))
    assert len([p for p in stored if "maps" not in p.parts]) == n
    assert len([p for p in stored if "maps" in p.parts]) == flagged

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


def _run(*args: str, keys) -> subprocess.CompletedProcess[str]:
    """flawscope with a key store of its own (so revoking or adding keys leaves the session's alone)."""
    import os

    env = {**os.environ, "FLAWSCOPE_KEYS": str(keys)}
    return subprocess.run(
        [sys.executable, "-m", "flawscope.cli", *args], capture_output=True, text=True, timeout=300, env=env
    )


def test_keys_trust_stores_and_signed_heads_from_the_command_line(deployed, tmp_path):
    import os
    import shutil

    root, data = deployed
    keys = tmp_path / "keys"
    shutil.copytree(os.environ["FLAWSCOPE_KEYS"], keys)  # the key that signed the deployed bundle
    folder = f"{data.root}/test/good"
    audit = f"sqlite:///{tmp_path / 'audit.db'}"

    listed = _run("keys", "list", keys=keys)
    assert listed.returncode == 0 and "signs here" in listed.stdout
    signer = _run("keys", "export", "-o", str(tmp_path / "engineer.pub"), keys=keys)
    assert signer.returncode == 0, signer.stderr
    key_id = signer.stdout.split()[2]

    # A station restricted to the engineer's public key loads the bundle; records name the signer.
    run = _run("inspect", str(root / "deploy"), "--source", folder, "--audit", audit,
               "--trusted-keys", str(tmp_path / "engineer.pub"), keys=tmp_path / "station-keys")  # fmt: skip
    assert run.returncode == 0, run.stderr
    with sqlite3.connect(tmp_path / "audit.db") as db:
        query = "select signer, allow_unsigned, graph_sha256, threshold_sha256 from inspections"
        rows = db.execute(query).fetchall()
    assert rows and all(r[0] == key_id and r[1] == 0 and len(r[2]) == 64 and len(r[3]) == 64 for r in rows)

    # The head is signed and exported; a truncated log is caught against it.
    head = _run("audit", "head", "--audit", audit, "--sign", "-o", str(tmp_path / "head.json"), keys=keys)
    assert head.returncode == 0 and "signed by key" in head.stdout, head.stderr
    ok = _run("audit", "verify", "--audit", audit, "--signed-head", str(tmp_path / "head.json"), keys=keys)
    assert ok.returncode == 0 and "intact" in ok.stdout, ok.stderr
    with sqlite3.connect(tmp_path / "audit.db") as db:
        db.execute("delete from inspections where seq = (select max(seq) from inspections)")
    cut = _run("audit", "verify", "--audit", audit, "--signed-head", str(tmp_path / "head.json"), keys=keys)
    assert cut.returncode == 1 and "were removed" in cut.stdout

    # Revoked here: the bundle is refused, naming the reason, in one line.
    revoked = _run("keys", "revoke", key_id, "--reason", "laptop stolen", keys=keys)
    assert revoked.returncode == 0, revoked.stderr
    refused = _run("inspect", str(root / "deploy"), "--source", folder, "--audit", audit, keys=keys)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"key {key_id}, which was revoked (laptop stolen" in refused.stderr


def test_an_unsigned_bundle_needs_allow_unsigned_and_every_record_says_so(deployed, tmp_path):
    import shutil

    from flawscope.bundle import read_bundle, write_bundle

    root, data = deployed
    unsigned = shutil.copytree(root / "deploy", tmp_path / "unsigned")
    write_bundle(unsigned, read_bundle(unsigned).manifest, {}, signed=False)
    audit = f"sqlite:///{tmp_path / 'audit.db'}"
    folder = f"{data.root}/test/good"
    refused = flawscope("inspect", str(unsigned), "--source", folder, "--audit", audit)
    assert refused.returncode == 2 and "refused because it is not signed" in refused.stderr
    assert not (tmp_path / "audit.db").exists()
    run = flawscope("inspect", str(unsigned), "--source", folder, "--audit", audit, "--allow-unsigned")
    assert run.returncode == 0, run.stderr
    with sqlite3.connect(tmp_path / "audit.db") as db:
        flags = {r[0] for r in db.execute("select allow_unsigned from inspections")}
    assert flags == {1}

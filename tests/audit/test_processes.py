"""Several writer processes on one log, and writers killed with SIGKILL mid-append."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from flawscope.audit import AuditLog

WRITER = str(Path(__file__).with_name("_writer.py"))


def start_writer(url: str, tag: str, n_batches: int, batch: int, wait: bool = False) -> subprocess.Popen[str]:
    args = [sys.executable, WRITER, url, tag, str(n_batches), str(batch)] + (["--wait"] if wait else [])
    return subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def reported(output: str) -> dict[int, str]:
    """``seq -> part_id`` for every complete line a writer printed."""
    lines = output.split("\n")[:-1]  # the last piece is empty or a line cut short by the kill
    return {int(seq): part for seq, part in (line.split() for line in lines)}


def test_two_writer_processes_append_to_one_chain(audit_url):
    # Both create the log if it is not there yet: that race is part of the test.
    n_batches, batch = 40, 3
    writers = [start_writer(audit_url, tag, n_batches, batch, wait=True) for tag in ("A", "B")]
    for w in writers:
        assert w.stdout is not None
        if w.stdout.readline().strip() != "ready":
            # Say why it did not start (its traceback), not only that it did not.
            for other in writers:
                other.kill()
            _, err = w.communicate(timeout=30)
            raise AssertionError(f"a writer did not open the log: {err[-3000:]}")
    for w in writers:
        assert w.stdin is not None
        w.stdin.write("go\n")
        w.stdin.flush()
    outputs = [w.communicate(timeout=120) for w in writers]
    for w, (_, err) in zip(writers, outputs, strict=True):
        assert w.returncode == 0, err
    seen = [reported(out) for out, _ in outputs]
    total = 2 * n_batches * batch
    assert sorted(set(seen[0]) | set(seen[1])) == list(range(1, total + 1))
    assert not set(seen[0]) & set(seen[1])
    with AuditLog.open(audit_url) as log:
        assert log.count() == total
        assert log.verify().ok
        for tag, mine in zip("AB", seen, strict=True):
            stored = [r for r in log.records() if r.station == tag]
            assert [r.seq for r in stored] == sorted(mine)
            # Each writer's records keep their order, and each batch is contiguous (one transaction).
            assert [r.part_id for r in stored] == [f"{tag}-{i}" for i in range(n_batches * batch)]
            for start in range(0, len(stored), batch):
                seqs = [r.seq for r in stored[start : start + batch]]
                assert seqs == list(range(seqs[0], seqs[0] + batch))


def test_writer_killed_mid_append_loses_nothing_it_reported(audit_url):
    rng = random.Random()
    AuditLog.open(audit_url).close()
    all_reported: dict[int, str] = {}
    # A longer benchmark runs more rounds: FLAWSCOPE_AUDIT_KILL_ROUNDS=20.
    for round_ in range(int(os.environ.get("FLAWSCOPE_AUDIT_KILL_ROUNDS", "3"))):
        writer = start_writer(audit_url, f"K{round_}", 0, 8)
        assert writer.stdout is not None
        first = [writer.stdout.readline() for _ in range(rng.randint(1, 40))]
        # A random moment: reading stops at a random line, then a random pause before the kill.
        time.sleep(rng.uniform(0, 0.05))
        writer.send_signal(signal.SIGKILL)
        rest, err = writer.communicate(timeout=30)
        assert writer.returncode == -signal.SIGKILL, err
        got = reported("".join(first) + rest)
        assert got, err
        all_reported.update(got)
        with AuditLog.open(audit_url) as log:
            result = log.verify()
            assert result.ok, result.problem
            for seq, part_id in all_reported.items():
                record = log.get(seq)
                assert record is not None and record.part_id == part_id
            # Whole batches only: a batch cut by the kill is in the log entirely or not at all.
            assert log.count() % 8 == 0

"""Writer process for the audit tests: appends batches and prints ``seq part_id`` after each commit.

Usage: ``python _writer.py URL TAG N_BATCHES BATCH [--wait]``; ``N_BATCHES`` 0 appends until killed.
With ``--wait`` it prints ``ready`` once the log is open and waits for a line on stdin.
"""

from __future__ import annotations

import sys

from flawscope.audit import AuditLog
from flawscope.types import InspectionRecord, Outcome


def main() -> None:
    url, tag, n_batches, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    with AuditLog.open(url) as log:
        if "--wait" in sys.argv:
            print("ready", flush=True)
            sys.stdin.readline()
        done = 0
        while n_batches == 0 or done < n_batches:
            records = [
                InspectionRecord(
                    part_id=f"{tag}-{done * batch + j}",
                    station=tag,
                    acquired_at=float(done * batch + j),
                    outcome=Outcome.PASS if j % 2 else Outcome.FAIL,
                    score=(done * batch + j) / 1000,
                )
                for j in range(batch)
            ]
            written = log.append_many(records)
            # Reported only once committed: the test holds the log to every line printed.
            sys.stdout.write("".join(f"{r.seq} {r.part_id}\n" for r in written))
            sys.stdout.flush()
            done += 1


if __name__ == "__main__":
    main()

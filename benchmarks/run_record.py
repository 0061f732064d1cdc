"""The JSON a benchmark script leaves: what ran, when, its cost and its results (one format)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


class RunRecord:
    """Started at the script's start; :meth:`write` saves the results with the command and the cost."""

    def __init__(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    def write(self, out: str | os.PathLike[str], args: argparse.Namespace, **results: Any) -> Path:
        """``results`` under the command line, the finish time, wall and CPU seconds and the load."""
        script = Path(sys.argv[0]).name
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "command": " ".join(
                [f"python benchmarks/{script}", *(f"--{k}={v}" for k, v in vars(args).items())]
            ),
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - self.wall0, 1),
            "cpu_seconds": round(time.process_time() - self.cpu0, 1),
            "load_average": os.getloadavg(),
            **results,
        }
        path.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {path}")
        return path

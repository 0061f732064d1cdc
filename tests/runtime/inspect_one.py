"""Load a deployable bundle, inspect one image (.npy) and print what happened as JSON.

Run as a script (``python inspect_one.py BUNDLE IMAGE.npy``) by the runtime tests, in the main
environment and in a venv without torch; not a test module itself.
"""

from __future__ import annotations

import time

START = time.perf_counter()

import dataclasses  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402

# Training-side packages the runtime must not import (torch above all).
HEAVY = (
    "torch",
    "torchvision",
    "scipy",
    "safetensors",
    "sklearn",
    "onnx",
    "faiss",
    "rich",
    "typer",
    "sqlalchemy",
)


def _peak_rss_mb() -> float:
    # VmHWM is this process image's own peak; getrusage would carry pytest's peak over fork+exec.
    try:
        with open("/proc/self/status") as status:
            lines = status.read().splitlines()
        for line in lines:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    import numpy as np

    from flawscope.runtime import Inspector

    imported = time.perf_counter()
    inspector = Inspector.load(sys.argv[1], threads=2)
    loaded = time.perf_counter()
    verdict = inspector.inspect(np.load(sys.argv[2]))
    first = time.perf_counter()
    heavy = sorted(name for name in HEAVY if name in sys.modules)
    top_level = {name.split(".")[0] for name in sys.modules}
    third_party = sorted(n for n in top_level - set(sys.stdlib_module_names) if not n.startswith("_"))
    rss_mb = _peak_rss_mb()  # before trying to import torch
    try:
        import torch  # noqa: F401

        torch_importable = True
    except ImportError:
        torch_importable = False
    report = {
        "verdict": dataclasses.asdict(dataclasses.replace(verdict, anomaly_map=None)),
        "heavy_modules_loaded": heavy,
        "third_party_loaded": [n for n in third_party if n != "flawscope"],
        "torch_importable": torch_importable,
        "seconds": {
            "import": imported - START,
            "load": loaded - imported,
            "first_verdict": first - loaded,
            "total": first - START,
        },
        "max_rss_mb": rss_mb,
        "onnxruntime": __import__("onnxruntime").__version__,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()

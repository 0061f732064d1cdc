"""Time `find_regions` on generated 256 x 256 maps, optionally beside another version of it.

    python benchmarks/regions.py [--reference OTHER_CHECKOUT/src] [--out benchmarks/results/regions.json]

The maps are what a failing part's map can look like: one region covering the whole map (a
briefly trained segmenter's defect map), one large blob, three blobs, and many small regions
(a noisy map at a low level). With ``--reference`` the same maps are timed, interleaved, with
the ``flawscope/decide/regions.py`` of another checkout (say a worktree of an older commit),
and the regions both give are checked to be the same.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent


def maps() -> dict[str, tuple[np.ndarray, float]]:
    """Name -> (map, level)."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[:256, :256]

    def blob(cy: float, cx: float, r: float) -> np.ndarray:
        return np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * r * r)).astype(np.float32)

    noise = cv2.GaussianBlur(rng.random((256, 256)).astype(np.float32), (0, 0), 2)
    return {
        "whole map": ((0.6 + 0.4 * rng.random((256, 256))).astype(np.float32), 0.5),
        "one blob (r 40)": (blob(128, 128, 40), 0.5),
        "three blobs": (blob(50, 50, 15) + blob(200, 180, 25) + blob(100, 220, 8), 0.5),
        "many small": (noise, float(np.quantile(noise, 0.8))),
    }


def per_call_ms(fn: Callable[[], object], seconds: float) -> float:
    fn()
    calls, start = 0, time.perf_counter()
    while calls < 20 or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return 1000 * (time.perf_counter() - start) / calls


def load_reference(src: Path) -> Callable[..., tuple]:
    spec = importlib.util.spec_from_file_location("reference_regions", src / "flawscope/decide/regions.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.find_regions  # type: ignore[no-any-return]


def same(a: tuple, b: tuple) -> bool:
    key = [(r.bbox, r.area_px, r.peak) for r in a] == [(r.bbox, r.area_px, r.peak) for r in b]
    return key and all(np.allclose(r.centroid, s.centroid, atol=1e-9) for r, s in zip(a, b, strict=True))


def main() -> None:
    from flawscope.decide.regions import find_regions
    from run_record import RunRecord

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", type=Path, help="another checkout's src folder, timed beside this one")
    parser.add_argument("--seconds", type=float, default=1.0, help="per map, version and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(HERE / "results" / "regions.json"))
    args = parser.parse_args()
    record = RunRecord()
    reference = load_reference(args.reference) if args.reference else None
    rows = {}
    print("map | regions | this ms per call | reference ms | this / reference")
    for name, (values, level) in maps().items():
        found = find_regions(values, level, max_regions=None)
        ours, theirs = [], []
        for _ in range(args.rounds):
            ours.append(
                per_call_ms(lambda v=values, x=level: find_regions(v, x, max_regions=None), args.seconds)
            )
            if reference is not None:
                assert same(found, reference(values, level, max_regions=None)), f"{name}: regions differ"
                theirs.append(
                    per_call_ms(lambda v=values, x=level: reference(v, x, max_regions=None), args.seconds)
                )
        row = {"regions": len(found), "ms": float(np.median(ours))}
        if theirs:
            row |= {"reference_ms": float(np.median(theirs)), "ratio": row["ms"] / float(np.median(theirs))}
        rows[name] = row
        more = f" | {row['reference_ms']:.3f} | {row['ratio']:.2f}" if theirs else ""
        print(f"{name} | {len(found)} | {row['ms']:.3f}{more}")
    record.write(args.out, args, rows=rows)


if __name__ == "__main__":
    main()

"""Tiled PaDiM: one Gaussian per tile position in the image, or statistics shared by every tile?

Shared statistics (what :class:`~flawscope.models.padim.PaDiM` does with ``tile``) fit one
Gaussian per cell *within* a tile from the cells of every tile of every training image: a tile
position's structure must look like what some tile showed somewhere. Per-tile statistics fit a
Gaussian per cell of each tile position in the image (fixed-geometry parts only: every image the
same size, so the same tiles): they know *where* a structure belongs, from ``n_train`` samples
per cell instead of ``n_train x tiles``.

For each case a seeded set of large synthetic parts (:mod:`flawscope.data.large_parts`) is made,
every tile's features are extracted once, and both statistics are fitted on the same training
features (same channels, same ``epsilon``) and evaluated on the same test features, stitched and
finished as the model does. Cases: ``printed`` (a plate with a fixed printed layout) and
``brushed_metal`` (a texture) with the generator's scratches, digs and pits, and
``printed/misplaced``: the positional defect, a 16-28 px piece of the print (a stroke of text or
barcode) repeated on blank plate where the layout has none: ink that is normal elsewhere on the
part, wrong only because of where it is.

    python benchmarks/tile_stats.py [--cases printed,brushed_metal,printed/misplaced] [--size 512x768]
        [--n-train 30] [--n-test 12] [--n-features 64]

Prints one table and writes benchmarks/results/tile_stats.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def gaussians(features: np.ndarray, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(P, C)`` and inverse covariance ``(P, C, C)`` of ``(N, P, C)`` samples, as PaDiM fits them."""
    x = features.astype(np.float64)
    mean = x.mean(0)
    centred = (x - mean).transpose(1, 0, 2)  # (P, N, C)
    cov = centred.transpose(0, 2, 1) @ centred / max(len(x) - 1, 1)
    cov += epsilon * np.eye(x.shape[2])[None]
    return mean.astype(np.float32), np.linalg.inv(cov).astype(np.float32)


def distances(features: np.ndarray, mean: np.ndarray, inv_cov: np.ndarray) -> np.ndarray:
    """``(N, P)`` Mahalanobis distances of ``(N, P, C)`` features to per-cell Gaussians."""
    d = (features - mean[None]).transpose(1, 0, 2)  # (P, N, C)
    squared = ((d @ inv_cov) * d).sum(-1)  # (P, N)
    return np.sqrt(np.maximum(squared, 0.0)).T


def misplaced_print(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A good printed part with a piece of its print repeated on blank plate; the image and its mask."""
    import cv2

    plate = float(np.median(image))
    ink = np.clip((plate - image.astype(np.float32)) / 100.0, 0.0, 1.0)  # 1 where fully inked
    near_ink = cv2.dilate((ink > 0.1).astype(np.uint8), np.ones((41, 41), np.uint8)) > 0
    height, width = image.shape
    out = image.astype(np.float32)
    mask = np.zeros(image.shape, bool)
    for _ in range(int(rng.integers(1, 3))):
        side = int(rng.integers(16, 29))
        for _ in range(10_000):  # a source window that holds some print, not solid ink
            top, left = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
            if 0.15 < ink[top : top + side, left : left + side].mean() < 0.6:
                break
        alpha = ink[top : top + side, left : left + side]
        for _ in range(10_000):  # a destination on blank plate, away from any print
            dt_, dl = int(rng.integers(40, height - side - 40)), int(rng.integers(40, width - side - 40))
            if not near_ink[dt_ : dt_ + side, dl : dl + side].any():
                break
        region = out[dt_ : dt_ + side, dl : dl + side]
        # The ink laid over this plate's own surface: no pasted edge, only the strokes.
        region[:] = region * (1.0 - alpha) + image[top : top + side, left : left + side] * alpha
        mask[dt_ : dt_ + side, dl : dl + side] |= alpha >= 0.25
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), mask


def run(case: str, args: argparse.Namespace) -> dict:
    from flawscope.data.large_parts import LargePartSpec, make_large_part
    from flawscope.data.tiling import STRIDE, Stitcher, finish_tiled, layout, tile_batches
    from flawscope.evaluate.metrics import evaluate_scores
    from flawscope.models.padim import PaDiM

    texture, _, defect = case.partition("/")
    height, width = (int(v) for v in args.size.split("x"))
    spec = LargePartSpec(
        size=(height, width),
        texture=texture,
        n_train=args.n_train,
        n_test_good=args.n_test,
        n_test_defect=args.n_test,
        seed=21,
    )
    train = [make_large_part(spec, "train", i)[0] for i in range(args.n_train)]
    test = [make_large_part(spec, "test_good", i) for i in range(args.n_test)]
    if defect == "misplaced":
        rng = np.random.default_rng(5)
        test += [
            misplaced_print(make_large_part(spec, "test_good", args.n_test + i)[0], rng)
            for i in range(args.n_test)
        ]
    else:
        test += [make_large_part(spec, "test_defect", i) for i in range(args.n_test)]
    # Fitted on one image only for its preprocessing, channels and extractor; the statistics below
    # are fitted on every training image's tiles.
    model = PaDiM(tile=args.tile, overlap=args.overlap, n_features=args.n_features, seed=0).fit(train[:1])
    pre, channels, runner = model.preprocessing_, model.channels_.numpy(), model._runner()
    lay = layout(train[0].shape, pre)
    position = {origin: t for t, origin in enumerate(lay.origins)}
    cells = (pre.tile // STRIDE) ** 2

    def extract(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, list]:
        feats, tiles, where_all = [], [], []
        for batch, where in tile_batches(images, pre, 8):
            f = runner(batch).numpy()[:, channels]  # (B, C, h, w)
            feats.append(f.reshape(len(f), len(channels), cells).transpose(0, 2, 1).copy())
            tiles.extend(position[(top, left)] for _, top, left in where)
            where_all.extend(where)
        return np.concatenate(feats), np.asarray(tiles), where_all

    t0 = time.perf_counter()
    train_f, train_t, _ = extract(train)
    test_f, test_t, test_where = extract([im for im, _ in test])
    extract_s = time.perf_counter() - t0
    shared = gaussians(train_f, args.epsilon)
    per_tile = {t: gaussians(train_f[train_t == t], args.epsilon) for t in range(len(lay.origins))}
    side = pre.tile // STRIDE
    rows = {}
    for name in ("shared", "per_tile"):
        grid_scores = np.empty(test_f.shape[:2], np.float32)
        for t in range(len(lay.origins)):
            pick = test_t == t
            mean, inv_cov = shared if name == "shared" else per_tile[t]
            grid_scores[pick] = distances(test_f[pick], mean, inv_cov)
        stitcher = Stitcher([lay] * len(test), pre.tile)
        stitcher.add(grid_scores.reshape(-1, side, side), test_where)
        finished = [finish_tiled(g, lay, pre) for g in stitcher.grids()]
        summary = evaluate_scores(
            np.asarray([f[0] for f in finished]),
            [0] * args.n_test + [1] * args.n_test,
            ["good"] * args.n_test + ["defect"] * args.n_test,
            [f[1] for f in finished],
            [None] * args.n_test + [m for _, m in test[args.n_test :]],
        ).overall
        rows[name] = {
            "image_auroc": summary.image_auroc,
            "pixel_auroc": summary.pixel_auroc,
            "au_pro": summary.au_pro,
            "state_mb": round(
                (1 if name == "shared" else len(lay.origins)) * cells * len(channels) ** 2 * 4 / 1e6, 1
            ),
        }
    return {
        "case": case,
        "size": [height, width],
        "tiles_per_image": len(lay.origins),
        "n_train": args.n_train,
        "n_test_good": args.n_test,
        "n_test_defect": args.n_test,
        "channels": len(channels),
        "samples_per_cell": {"shared": args.n_train * len(lay.origins), "per_tile": args.n_train},
        "extract_seconds": round(extract_s, 1),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", default="printed,brushed_metal,printed/misplaced")
    parser.add_argument("--size", default="512x768", help="HxW of every part")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--n-train", type=int, default=30)
    parser.add_argument("--n-test", type=int, default=12, help="good and defective test parts each")
    parser.add_argument(
        "--n-features", type=int, default=64, help="random channels kept (PaDiM's n_features)"
    )
    parser.add_argument(
        "--epsilon", type=float, default=0.01, help="ridge on each covariance (PaDiM's default)"
    )
    parser.add_argument("--output", default="tile_stats.json")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    load = os.getloadavg()[0]
    results = []
    print("| case | statistics | samples per cell | img AUROC | pix AUROC | AU-PRO | state MB |")
    print("|---|---|---|---|---|---|---|")
    for case in args.cases.split(","):
        r = run(case, args)
        results.append(r)
        for name, row in r["rows"].items():
            print(
                f"| {case} | {name} | {r['samples_per_cell'][name]} | {row['image_auroc']:.3f} | "
                f"{row['pixel_auroc']:.3f} | {row['au_pro']:.3f} | {row['state_mb']} |",
                flush=True,
            )
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_at_start": load,
        "load_at_end": os.getloadavg()[0],
        "args": vars(args),
    }
    (HERE / "results" / args.output).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"load {load:.1f} -> {meta['load_at_end']:.1f}; wrote benchmarks/results/{args.output}")


if __name__ == "__main__":
    main()

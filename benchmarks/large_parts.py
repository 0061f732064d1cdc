"""Tiling on large parts with tiny defects: accuracy tiled vs whole-image-resized, and cost per megapixel.

Part 1 (accuracy): a seeded set of large synthetic parts (:mod:`flawscope.data.large_parts`,
defects of 10-30 px) is written, and each model is trained and evaluated twice: tiled at the
image's own resolution (``tile``/``overlap``) and on the whole image resized to the usual canvas.
Part 2 (cost): the tiled model is exported and the torch-free runtime scores one good part at
1 to 12 megapixels, the sizes interleaved in ``--rounds`` rounds (best of N per size, the load
sampled each round); the time per megapixel at each size is printed with its ratio to the mean.
Prints tables and writes benchmarks/results/large_parts.json.

    python benchmarks/large_parts.py [--size 3000x4000] [--models padim,patchcore] [--tile 256]
        [--overlap 0.25] [--tile-scale 1] [--seed 11] [--workers 1] [--megapixels 1,2,4,8,12]
        [--rounds 5] [--skip-accuracy] [--skip-cost]

``--seed`` draws another set of parts (11 is the test set whose numbers RESULTS.md reports;
choose settings on another seed). ``--workers N`` scores the test parts in N processes of one
thread each (the parts split between them, the maps merged before the metrics): the same
numbers as one process, in less wall time on a shared machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _score_part_files(bundle: str, paths: list[str]) -> tuple[list[float], list]:
    """Scores and maps of some test parts, in a worker process of one thread."""
    import torch

    from flawscope.data.imageio import read_image
    from flawscope.models.io import load_model

    torch.set_num_threads(1)
    model, _ = load_model(bundle)
    prediction = model.predict([read_image(p) for p in paths])
    return [float(v) for v in prediction.scores], list(prediction.maps)


def evaluate_in_workers(bundle: Path, root: Path, workers: int) -> tuple[object, float, int]:
    """:func:`evaluate_bundle`'s metrics, the test parts scored in ``workers`` processes."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    import numpy as np

    from flawscope.data.datasets import load_dataset, read_samples
    from flawscope.evaluate.metrics import evaluate_scores

    test = load_dataset(root).test
    loaded = read_samples(test)
    paths = [str(s.path) for s in loaded.samples]
    chunks = [paths[k::workers] for k in range(workers)]
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the workers before torch starts there
    start = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        done = list(pool.map(_score_part_files, [str(bundle)] * workers, chunks))
    seconds = time.perf_counter() - start
    by_path = {}
    for chunk, (scores, maps) in zip(chunks, done, strict=True):
        by_path.update({p: (s, m) for p, s, m in zip(chunk, scores, maps, strict=True)})
    summary = evaluate_scores(
        np.array([by_path[p][0] for p in paths]),
        np.array([s.label for s in loaded.samples]),
        [s.defect_type for s in loaded.samples],
        maps=[by_path[p][1] for p in paths],
        masks=list(loaded.masks),
    )
    return summary, seconds, len(paths)


def accuracy(root: Path, model: str, params: dict, out: Path, workers: int = 1) -> dict:
    from flawscope.evaluate.run import evaluate_bundle
    from flawscope.models.train import train

    name, _, rest = model.partition(":")
    for item in filter(None, rest.split(";")):
        key, _, value = item.partition("=")
        params[key] = json.loads(value)
    start = time.perf_counter()
    result = train(root, out / "bundle", model=name, params=params)
    fit = time.perf_counter() - start
    if workers > 1:
        summary, seconds, n = evaluate_in_workers(out / "bundle", root, workers)
        m = summary.overall  # type: ignore[attr-defined]
        per_image = seconds * workers / n
    else:
        run = evaluate_bundle(out / "bundle", root, store_metrics=False)
        m = run.summary.overall
        per_image = run.predict_seconds / len(run.samples)
    return {
        "model": model,
        "params": params,
        "image_auroc": m.image_auroc,
        "pixel_auroc": m.pixel_auroc,
        "au_pro": m.au_pro,
        "fit_seconds": round(fit, 1),
        "predict_seconds_per_image": round(per_image, 2),
        "canvas": [result.model.preprocessing_.height, result.model.preprocessing_.width],
    }


def subset(root: Path, n_train: int, n_test: int, work: Path) -> Path:
    """The first ``n_train`` training and ``n_test`` good and defective test parts of ``root``, linked."""
    out = work / f"subset-{n_train}-{n_test}"
    plan = (("train/good", n_train), ("test/good", n_test), ("test/defect", n_test))
    for folder, count in plan:
        files = sorted((root / folder).glob("*.png"))
        if len(files) < count:
            raise SystemExit(f"{root / folder} holds {len(files)} parts, fewer than the {count} asked for")
        (out / folder).mkdir(parents=True, exist_ok=True)
        for f in files[:count]:
            (out / folder / f.name).symlink_to(f)
            mask = root / "ground_truth" / "defect" / f"{f.stem}_mask.png"
            if folder == "test/defect":
                (out / "ground_truth" / "defect").mkdir(parents=True, exist_ok=True)
                (out / "ground_truth" / "defect" / mask.name).symlink_to(mask)
    return out


def cost(bundle: Path, megapixels: list[float], texture: str, work: Path, rounds: int) -> list[dict]:
    """Seconds per megapixel of the torch-free runtime at each size, robust to a changing load.

    The sizes are interleaved: each round scores one part of every size, in an order that
    rotates from round to round, so a change of the machine's load hits every size alike; each
    size keeps its best (least disturbed) time over the rounds, and the load is sampled per round.
    """
    from flawscope.data.large_parts import LargePartSpec, make_large_part
    from flawscope.data.tiling import layout
    from flawscope.export.onnx_export import export_bundle
    from flawscope.runtime import Inspector

    export_bundle(bundle, work / "deployed")
    inspector = Inspector.load(work / "deployed", threads=2)
    images = []
    for mp in megapixels:
        height = round(math.sqrt(mp * 1e6 * 3 / 4))
        width = round(height * 4 / 3)
        spec = LargePartSpec(size=(height, width), texture=texture, n_train=0, seed=7)
        images.append(make_large_part(spec, "test_good", 0)[0])
    inspector.score_many([images[0]])  # warm-up (sessions, caches)
    times: list[list[float]] = [[] for _ in images]
    loads = []
    for r in range(rounds):
        order = [(i + r) % len(images) for i in range(len(images))]
        for i in order:
            t0 = time.perf_counter()
            inspector.score_many([images[i]])
            times[i].append(time.perf_counter() - t0)
        loads.append(os.getloadavg()[0])
        print(f"  round {r + 1}/{rounds} done, load {loads[-1]:.1f}", flush=True)
    rows = []
    for image, measured in zip(images, times, strict=True):
        height, width = image.shape[:2]
        mp = height * width / 1e6
        tiles = len(layout(image.shape, inspector.preprocessing).origins)
        best = min(measured)
        rows.append(
            {
                "megapixels": mp,
                "size": [height, width],
                "tiles": tiles,
                "tiles_per_megapixel": tiles / mp,
                "seconds_best": best,
                "seconds_all": measured,
                "ms_per_megapixel": 1000 * best / mp,
                "ms_per_megapixel_median": 1000 * sorted(measured)[len(measured) // 2] / mp,
            }
        )
    mean = sum(r["ms_per_megapixel"] for r in rows) / len(rows)
    for r in rows:
        r["ratio_to_mean"] = r["ms_per_megapixel"] / mean
        r["load_per_round"] = loads
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="3000x4000", help="HxW of the accuracy set's parts")
    parser.add_argument("--texture", default="brushed_metal")
    parser.add_argument("--models", default="padim,patchcore")
    parser.add_argument("--inputs", default="tiled,resized", help="tiled, resized (whole image) or both")
    parser.add_argument(
        "--data",
        help="keep the parts in this folder (written there when absent, else reused: its first parts)",
    )
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--tile-scale", type=float, default=1.0, help="magnification before tiling")
    parser.add_argument("--seed", type=int, default=11, help="the parts' seed (11: the test set)")
    parser.add_argument("--workers", type=int, default=1, help="processes scoring the test parts")
    parser.add_argument("--n-train", type=int, default=8)
    parser.add_argument("--n-test", type=int, default=10, help="good and defective test parts each")
    parser.add_argument("--megapixels", default="1,2,4,8,12")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (best of N)")
    parser.add_argument("--output", default="large_parts.json")
    args = parser.parse_args()

    import torch

    from flawscope.data.large_parts import LargePartSpec, write_large_parts

    torch.set_num_threads(2)
    load = os.getloadavg()[0]
    height, width = (int(v) for v in args.size.split("x"))
    tiled = {"tile": args.tile, "overlap": args.overlap, "tile_scale": args.tile_scale}
    results: dict = {"accuracy": [], "cost": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        spec = LargePartSpec(
            size=(height, width),
            texture=args.texture,
            n_train=args.n_train,
            n_test_good=args.n_test,
            n_test_defect=args.n_test,
            seed=args.seed,
        )
        t0 = time.perf_counter()
        root = Path(args.data) if args.data else work / "data"
        if not args.skip_accuracy:
            if not (root / "train").exists():
                write_large_parts(root, spec)
                print(
                    f"wrote {args.n_train + 2 * args.n_test} parts of {width}x{height} "
                    f"in {time.perf_counter() - t0:.0f} s",
                    flush=True,
                )
            root = subset(root, args.n_train, args.n_test, work)
        tiled_bundle = None
        if not args.skip_accuracy:
            print("| model | input | img AUROC | pix AUROC | AU-PRO | fit s | predict s/img |")
            print("|---|---|---|---|---|---|---|")
            for model in args.models.split(","):
                chosen = args.inputs.split(",")
                inputs = [("tiled", dict(tiled))] if "tiled" in chosen else []
                inputs += [("whole image resized", {})] if "resized" in chosen else []
                for label, params in inputs:
                    out = work / f"{model.replace(':', '_')}-{label[:5]}"
                    r = accuracy(root, model, params, out, args.workers)
                    r["input"] = label
                    results["accuracy"].append(r)
                    if label == "tiled" and tiled_bundle is None:
                        tiled_bundle = out / "bundle"
                    print(
                        f"| {model} | {label} {r['canvas']} | {r['image_auroc']:.3f} | "
                        f"{r['pixel_auroc']:.3f} | {r['au_pro']:.3f} | {r['fit_seconds']} | "
                        f"{r['predict_seconds_per_image']} |",
                        flush=True,
                    )
        if not args.skip_cost:
            if tiled_bundle is None:
                from flawscope.models.train import train

                # The cost per megapixel does not depend on what the model was fitted on: two small parts.
                small = LargePartSpec(
                    size=(512, 512), texture=args.texture, n_train=2, n_test_good=0, n_test_defect=0, seed=12
                )
                small_root = write_large_parts(work / "small", small)
                tiled_bundle = work / "cost-bundle"
                train(
                    small_root, tiled_bundle, model=args.models.split(",")[0].partition(":")[0], params=tiled
                )
            print(f"cost per megapixel, torch-free runtime, tile {args.tile}, overlap {args.overlap}:")
            mps = [float(v) for v in args.megapixels.split(",")]
            results["cost"] = cost(tiled_bundle, mps, args.texture, work, args.rounds)
            print("| size | tiles | tiles / MP | best s | ms / MP (best) | ms / MP (median) | to mean |")
            print("|---|---|---|---|---|---|---|")
            for r in results["cost"]:
                print(
                    f"| {r['size'][0]} x {r['size'][1]} ({r['megapixels']:.1f} MP) | {r['tiles']} | "
                    f"{r['tiles_per_megapixel']:.1f} | {r['seconds_best']:.2f} | "
                    f"{r['ms_per_megapixel']:.0f} | {r['ms_per_megapixel_median']:.0f} | "
                    f"{r['ratio_to_mean']:.2f} |"
                )
            ratios = [r["ratio_to_mean"] for r in results["cost"]]
            spread = max(ratios) / min(ratios)
            print(f"ratio to mean {min(ratios):.2f}-{max(ratios):.2f} (max / min {spread:.2f})")
    results["meta"] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_at_start": load,
        "load_at_end": os.getloadavg()[0],
        "size": [height, width],
        "tile": args.tile,
        "overlap": args.overlap,
        "tile_scale": args.tile_scale,
        "seed": args.seed,
        "workers": args.workers,
        "n_train": args.n_train,
        "n_test_good": args.n_test,
        "n_test_defect": args.n_test,
    }
    (HERE / "results" / args.output).write_text(json.dumps(results, indent=2))
    print(f"load {load:.1f} -> {results['meta']['load_at_end']:.1f}; wrote benchmarks/results/{args.output}")


if __name__ == "__main__":
    main()

"""PatchCore at full strength: what the IVF search costs against exact search, and against the backbone.

For each dataset: fit PatchCore with its defaults (bank of 10% of the training patches, greedy
coreset, IVF index), time the fit by stage (reading + features, coreset, IVF training), then on
the test split run the backbone once and search its features with an exact faiss
``IndexFlatL2`` over the same bank (the reference) and with several IVF ``nprobe``, each timed in
the same run. For each search: image/pixel AUROC and AU-PRO, and against the exact search the
share of patches whose nearest distance differs and the relative error of the distances (IVF
can only overestimate). ``--torch-exact`` adds the exact torch head (slow: one dense matrix
product per image; it gives the exact distances too, so it is only a timing reference).
Prints one table and writes benchmarks/results/patchcore_search.json.

    python benchmarks/patchcore_search.py [--datasets magnetic_tile,kolektorsdd] [--nprobe 1,4,8,16]
        [--params '{"coreset_ratio": 0.1}'] [--torch-exact] [--fit-only]

``--fit-only`` stops after the fit: the quiet re-run of the fit time by stage is
``python benchmarks/patchcore_search.py --datasets magnetic_tile --fit-only --output patchcore_fit.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "datasets"


def run(
    dataset: str,
    nprobes: list[str],
    params: dict,
    out: Path,
    torch_exact: bool = False,
    fit_only: bool = False,
) -> dict:
    import faiss
    import torch

    from flawscope.data.datasets import load_dataset, read_samples
    from flawscope.data.outputs import finish_outputs
    from flawscope.data.preprocess import to_batch
    from flawscope.evaluate.metrics import evaluate_scores
    from flawscope.models.train import train
    from flawscope.search.ivf import IvfIndex

    torch.set_num_threads(2)
    # Wall and process CPU seconds (all threads) at each stage's last progress call: CPU time
    # tells a stage's work apart from the machine's load, which wall time does not.
    stages: dict[str, tuple[float, float]] = {}

    def progress(stage: str, done: int, total: int) -> None:
        stages[stage] = (time.perf_counter(), time.process_time())

    start = (time.perf_counter(), time.process_time())
    result = train(SHARED / dataset, out / "bundle", model="patchcore", params=params, progress=progress)
    end = (time.perf_counter(), time.process_time())
    fit = end[0] - start[0]
    # The stages as the progress callback saw them: features (from the start: reading included),
    # the coreset, the IVF k-means and filing, then saving the bundle.
    features_end = stages.get("features", start)
    coreset_end = stages.get("coreset", features_end)
    ivf_end = stages.get("ivf", coreset_end)
    marks = {"read_and_features": (start, features_end), "coreset": (features_end, coreset_end)}
    marks["ivf"] = (coreset_end, ivf_end)
    marks["save"] = (ivf_end, end)
    fit_stages = {name: round(b[0] - a[0], 1) for name, (a, b) in marks.items()}
    fit_stages_cpu = {name: round(b[1] - a[1], 1) for name, (a, b) in marks.items()}
    model = result.model
    fit_record = {
        "dataset": dataset,
        "params": model.hyperparameters(),
        "n_train": result.n_train,
        "bank_size": int(model.memory_bank_.shape[0]),
        "fit_seconds": round(result.fit_seconds, 1),
        "train_seconds_incl_io": round(fit, 1),
        "fit_stages_seconds": fit_stages,
        "fit_stages_cpu_seconds": fit_stages_cpu,
        "fit_cpu_seconds": round(end[1] - start[1], 1),
        "load_during_fit": os.getloadavg()[0],
    }
    if fit_only:
        return fit_record
    arrays = model.host_search().arrays if model.host_search() is not None else None
    test = read_samples(load_dataset(SHARED / dataset).test)
    pre, declaration = model.preprocessing_, model.declaration()
    runner, size = model._runner(), 8
    features, geometries, t_backbone = [], [], 0.0
    for s in range(0, len(test.images), size):
        batch, geos = to_batch(test.images[s : s + size], pre)
        t0 = time.perf_counter()
        features.append(np.ascontiguousarray(runner(batch).numpy(), dtype=np.float32))
        t_backbone += time.perf_counter() - t0
        geometries.append(geos)
    n = len(test.images)
    labels = [s.label for s in test.samples]
    types = [s.defect_type for s in test.samples]

    reference: list[np.ndarray] = []

    def evaluate(search) -> dict:
        grids, t = [], 0.0
        for f in features:
            t0 = time.perf_counter()
            grids.append(search(f))
            t += time.perf_counter() - t0
        if not reference:
            reference.extend(grids)
        exact = np.concatenate([g.ravel() for g in reference])
        found = np.concatenate([g.ravel() for g in grids])
        relative = (found - exact) / np.maximum(exact, 1e-6)
        parts = [
            finish_outputs({"patch_scores": g}, geo, pre, declaration)
            for g, geo in zip(grids, geometries, strict=True)
        ]
        scores = np.concatenate([p.scores for p in parts])
        maps = [m for p in parts for m in p.maps]
        summary = evaluate_scores(scores, labels, types, maps, test.masks).overall
        return {
            "image_auroc": summary.image_auroc,
            "pixel_auroc": summary.pixel_auroc,
            "au_pro": summary.au_pro,
            "search_ms_per_image": 1000 * t / n,
            "search_over_backbone": t / t_backbone,
            "patches_differing": float(np.mean(np.abs(relative) > 1e-4)),
            "relative_error_mean": float(np.mean(relative)),
            "relative_error_p99": float(np.quantile(relative, 0.99)),
            "relative_error_max": float(np.max(relative)),
        }

    rows = {}
    bank_np = np.ascontiguousarray(model.memory_bank_.numpy(), dtype=np.float32)
    flat = faiss.IndexFlatL2(bank_np.shape[1])
    flat.add(bank_np)

    def exact_flat(f: np.ndarray) -> np.ndarray:
        b, c, h, w = f.shape
        distances, _ = flat.search(np.ascontiguousarray(f.transpose(0, 2, 3, 1).reshape(-1, c)), 1)
        return np.sqrt(np.maximum(distances[:, 0], 0.0)).reshape(b, h, w)

    rows["exact (faiss IndexFlatL2)"] = evaluate(exact_flat)
    if torch_exact:
        head = model.head()

        def exact_head(f: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return head(torch.from_numpy(f)).numpy()

        rows["exact (torch matmul)"] = evaluate(exact_head)
    if arrays is not None:
        for probe in nprobes:
            nprobe = len(arrays.centroids) if probe == "all" else int(probe)
            index = IvfIndex(arrays, nprobe)
            rows[f"ivf nprobe={probe}"] = evaluate(index.search_grid)
    bank = model.memory_bank_
    bank_mb = bank.numel() * 4 / 1e6
    if arrays is not None:
        bank_mb += (arrays.centroids.nbytes + arrays.assign.nbytes) / 1e6
    return {
        "dataset": dataset,
        "params": model.hyperparameters(),
        "n_train": result.n_train,
        "n_test": n,
        "canvas": [pre.height, pre.width],
        "bank_size": int(bank.shape[0]),
        "bank_dims": int(bank.shape[1]),
        "nlist": None if arrays is None else len(arrays.centroids),
        "bank_and_index_mb": round(bank_mb, 1),
        "fit_seconds": round(result.fit_seconds, 1),
        "train_seconds_incl_io": round(fit, 1),
        "fit_stages_seconds": fit_stages,
        "fit_stages_cpu_seconds": fit_stages_cpu,
        "fit_cpu_seconds": round(end[1] - start[1], 1),
        "backbone_ms_per_image": 1000 * t_backbone / n,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", default="magnetic_tile,kolektorsdd")
    parser.add_argument("--nprobe", default="1,4,8,16")
    parser.add_argument("--torch-exact", action="store_true", help="also time the exact torch head (slow)")
    parser.add_argument("--params", default="{}", help="PatchCore hyperparameters as JSON")
    parser.add_argument(
        "--fit-only", action="store_true", help="time the fit by stage (wall and CPU seconds) and stop there"
    )
    parser.add_argument("--output", default="patchcore_search.json")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    results = []
    for dataset in args.datasets.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            r = run(
                dataset,
                args.nprobe.split(","),
                json.loads(args.params),
                Path(tmp),
                args.torch_exact,
                args.fit_only,
            )
        results.append(r)
        if args.fit_only:
            print(
                f"{dataset}: bank {r['bank_size']} of {r['n_train']} images; fit {r['fit_seconds']} s wall, "
                f"{r['fit_cpu_seconds']} s CPU; stages wall {r['fit_stages_seconds']}, "
                f"CPU {r['fit_stages_cpu_seconds']}; load {r['load_during_fit']:.1f}",
                flush=True,
            )
            continue
        print(
            f"\n{dataset}: bank {r['bank_size']} x {r['bank_dims']} "
            f"({r['bank_and_index_mb']} MB with the index, "
            f"nlist {r['nlist']}), fit {r['fit_seconds']} s (stages {r['fit_stages_seconds']}; "
            f"CPU {r['fit_cpu_seconds']} s: {r['fit_stages_cpu_seconds']}), "
            f"backbone {r['backbone_ms_per_image']:.1f} ms/image"
        )
        print(
            "| search | img AUROC | pix AUROC | AU-PRO | patches differing | rel. err mean / p99 / max "
            "| search ms/img | search / backbone |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for name, row in r["rows"].items():
            print(
                f"| {name} | {row['image_auroc']:.3f} | {row['pixel_auroc']:.3f} | {row['au_pro']:.3f} | "
                f"{row['patches_differing']:.4f} | {row['relative_error_mean']:.2e} / "
                f"{row['relative_error_p99']:.2e} / {row['relative_error_max']:.2e} | "
                f"{row['search_ms_per_image']:.1f} | {row['search_over_backbone']:.2f} |",
                flush=True,
            )
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_at_start": load,
        "load_at_end": os.getloadavg()[0],
    }
    path = HERE / "results" / args.output
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"\nload {load:.1f} -> {meta['load_at_end']:.1f}; wrote {path}")


if __name__ == "__main__":
    main()

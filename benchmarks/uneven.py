"""Why magnetic_tile's pixel AUROC stays near 0.82: what the `uneven` masks mark (issue 2).

Fits the default PaDiM on magnetic_tile's good training tiles (or loads ``--bundle``), then on
the test set:

1. pixel AUROC per defect type of the default model;
2. a *supervised* linear probe on the same frozen features, trained on half of the `uneven`
   tiles (plus half of the good test tiles) and scored on the other half, both ways round:
   whether the features carry what the masks mark at all (cell level, stride 8);
3. how far the marked band lies from the good tiles along the probe's direction, in units of
   the good tiles' spread at each position (the per-position Gaussians PaDiM fitted);
4. good-parts-only alternatives on the same features: PaDiM on features averaged over a
   large window, alone and added to the default map (z-scored on the training tiles).

The probe uses defect labels, so it is a diagnosis, not a model: it says whether the
information is there, which a good-parts-only statistic would have to find without them.
Prints a table and writes benchmarks/results/uneven.json.

    python benchmarks/uneven.py [--bundle BUNDLE] [--windows 7,13]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent / "shared" / "datasets" / "magnetic_tile"
STRIDE = 8


def cell_mask(mask: np.ndarray, geometry, pre, shape: tuple[int, int]) -> np.ndarray:
    """Full-resolution mask to the feature grid: a cell is marked when over half of it is."""
    canvas = np.zeros((pre.height, pre.width), np.float32)
    inner = cv2.resize(
        (mask > 0).astype(np.float32),
        (geometry.inner_width, geometry.inner_height),
        interpolation=cv2.INTER_AREA,
    )
    canvas[
        geometry.top : geometry.top + geometry.inner_height,
        geometry.left : geometry.left + geometry.inner_width,
    ] = inner
    return cv2.resize(canvas, (shape[1], shape[0]), interpolation=cv2.INTER_AREA) > 0.5


def features(model, runner, images, batch: int = 16):
    """``(N, C, h, w)`` fused features, ``(N, h, w)`` PaDiM scores and validity, and geometries."""
    import torch

    from flawscope.data.preprocess import canvas_valid_mask, to_batch

    pre = model.preprocessing_
    feats, grids, valid, geoms = [], [], [], []
    for start in range(0, len(images), batch):
        x, g = to_batch(images[start : start + batch], pre)
        f = runner(x)
        with torch.inference_mode():
            grids.append(model.head()(f).numpy())  # the head alone on the features
        feats.append(f.numpy())
        valid.append(canvas_valid_mask(g, pre, STRIDE))
        geoms += g
    return np.concatenate(feats), np.concatenate(grids), np.concatenate(valid), geoms


def gaussian_scores(model, train_f: np.ndarray, test_f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PaDiM's own statistics and scorer, fitted on other features ``(N, C, h, w)``; both sets scored."""
    import torch

    from flawscope.models.padim import MahalanobisScorer, PaDiM

    head = PaDiM(**model.hyperparameters())
    chunks = ((torch.from_numpy(train_f[i : i + 64]), None) for i in range(0, len(train_f), 64))
    head._fit_features(chunks, len(train_f), None)
    scorer = MahalanobisScorer(model._embedder(), head.channels_, head.mean_, head.inv_cov_)

    def score(f: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return np.concatenate(
                [scorer.score_features(torch.from_numpy(f[i : i + 64])).numpy() for i in range(0, len(f), 64)]
            )

    return score(train_f), score(test_f)


def window(f: np.ndarray, size: int) -> np.ndarray:
    """Average each cell's features over a ``size`` x ``size`` window of cells."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(f)
    return F.avg_pool2d(t, size, stride=1, padding=size // 2, count_include_pad=False).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bundle", type=Path, help="a PaDiM bundle fitted on magnetic_tile (default: fit one)"
    )
    parser.add_argument("--windows", default="7,13", help="window sizes (cells) for the good-only variant")
    args = parser.parse_args()
    if not ROOT.is_dir():
        print(
            f"skipping: magnetic_tile not found at {ROOT} (needs ../shared/datasets beside the repo)",
            file=sys.stderr,
        )
        return

    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from flawscope.data.datasets import load_dataset, read_samples
    from flawscope.data.preprocess import finish_map
    from flawscope.evaluate.metrics import evaluate_scores
    from flawscope.models.engine import make_runner
    from flawscope.models.io import load_model
    from flawscope.models.train import train

    torch.set_num_threads(2)
    started = time.perf_counter()
    tmp = tempfile.TemporaryDirectory()
    bundle = args.bundle
    if bundle is None:
        bundle = Path(tmp.name) / "padim"
        train(ROOT, bundle, model="padim")
    model, _ = load_model(bundle)
    pre = model.preprocessing_
    dataset = load_dataset(ROOT)
    test = read_samples(dataset.test, masks=True)
    train_images = read_samples(dataset.train, masks=False).images
    runner = make_runner(model._embedder(), pre.height, pre.width, model.config.engine)  # built once
    feats, grids, valid, geoms = features(model, runner, test.images)
    train_feats, train_grids, train_valid, _ = features(model, runner, train_images)
    types = np.array([s.defect_type for s in test.samples])
    labels = [s.label for s in test.samples]
    shape = feats.shape[2:]
    marked = np.stack(
        [
            np.zeros(shape, bool) if m is None else cell_mask(m, g, pre, shape)
            for m, g in zip(test.masks, geoms, strict=True)
        ]
    )

    def evaluate(cell_scores: np.ndarray):
        out = [finish_map(g, ge, pre) for g, ge in zip(cell_scores, geoms, strict=True)]
        return evaluate_scores(
            [o[0] for o in out], labels, list(types), [o[1] for o in out], list(test.masks)
        )

    base = evaluate(grids)
    result: dict = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "padim": {
            "image_auroc": base.overall.image_auroc,
            "pixel_auroc": base.overall.pixel_auroc,
            "au_pro": base.overall.au_pro,
            "pixel_auroc_per_type": {t: m.pixel_auroc for t, m in base.per_type.items()},
        },
    }

    # 2. supervised probe, two folds over the uneven and good test tiles
    uneven, good = np.where(types == "uneven")[0], np.where(types == "good")[0]
    folds = []
    for fold in range(2):
        fit_i = np.concatenate([uneven[fold::2], good[fold::2]])
        held = np.concatenate([uneven[1 - fold :: 2], good[1 - fold :: 2]])
        x = feats[fit_i].transpose(0, 2, 3, 1)[valid[fit_i]]
        y = marked[fit_i][valid[fit_i]]
        mu, sd = x.mean(0), x.std(0) + 1e-6
        probe = LogisticRegression(C=0.1, max_iter=1000).fit((x - mu) / sd, y)
        xh = (feats[held].transpose(0, 2, 3, 1)[valid[held]] - mu) / sd
        yh = marked[held][valid[held]]
        within_probe, within_padim = [], []
        for i in uneven[1 - fold :: 2]:
            yi = marked[i][valid[i]]
            if yi.sum() < 3 or (~yi).sum() < 3:
                continue  # empty or almost empty mask
            xi = (feats[i].transpose(1, 2, 0)[valid[i]] - mu) / sd
            within_probe.append(roc_auc_score(yi, probe.decision_function(xi)))
            within_padim.append(roc_auc_score(yi, grids[i][valid[i]]))
        direction = probe.coef_[0] / sd
        folds.append(
            {
                "cell_auroc_probe": roc_auc_score(yh, probe.decision_function(xh)),
                "cell_auroc_padim": roc_auc_score(yh, grids[held][valid[held]]),
                "within_image_auroc_probe": float(np.mean(within_probe)),
                "within_image_auroc_padim": float(np.mean(within_padim)),
                "direction": direction / np.linalg.norm(direction),
            }
        )

    # 3. the marked band along the probe's direction, in the good tiles' spread at each position
    w = folds[0].pop("direction")
    folds[1].pop("direction")
    cov = np.linalg.inv(model.inv_cov_.double().numpy())  # (P, C, C), ridge included
    mean = model.mean_.double().numpy()
    var_w = np.einsum("c,pcd,d->p", w, cov, w)
    share = float(np.median(var_w / np.trace(cov, axis1=1, axis2=2)))

    def z_along(i: int) -> np.ndarray:
        f = feats[i].reshape(feats.shape[1], -1).T
        return (((f - mean) @ w) / np.sqrt(var_w)).reshape(shape)

    groups = {
        "good": np.concatenate([z_along(i)[valid[i]] for i in good]),
        "uneven_unmarked": np.concatenate([z_along(i)[valid[i] & ~marked[i]] for i in uneven]),
        "uneven_marked": np.concatenate([z_along(i)[valid[i] & marked[i]] for i in uneven]),
    }
    result["probe"] = {
        "folds": folds,
        "good_variance_share_along_direction": share,
        "uniform_share": 1.0 / len(w),
        "z_percentiles_5_50_95": {k: np.percentile(v, [5, 50, 95]).tolist() for k, v in groups.items()},
    }

    # 4. good-parts-only: PaDiM on window-averaged features, alone and added to the default map
    train_cells = train_grids[train_valid]
    z_base = (grids - train_cells.mean()) / train_cells.std()
    variants = []
    for size in (int(s) for s in args.windows.split(",")):
        s_train, s_test = gaussian_scores(model, window(train_feats, size), window(feats, size))
        cells = s_train[train_valid]
        z_window = (s_test - cells.mean()) / cells.std()
        for name, cell_scores in (
            (f"window {size}", s_test),
            (f"default + window {size}", z_base + z_window),
        ):
            r = evaluate(cell_scores)
            variants.append(
                {
                    "variant": name,
                    "image_auroc": r.overall.image_auroc,
                    "pixel_auroc": r.overall.pixel_auroc,
                    "au_pro": r.overall.au_pro,
                    "uneven_pixel_auroc": r.per_type["uneven"].pixel_auroc,
                }
            )
    result["good_only_variants"] = variants
    result["seconds"] = time.perf_counter() - started
    tmp.cleanup()

    p = result["padim"]
    print(
        f"default PaDiM: image {p['image_auroc']:.3f}  pixel {p['pixel_auroc']:.3f}  AU-PRO {p['au_pro']:.3f}"
    )
    print("pixel AUROC per type: " + ", ".join(f"{t} {v:.3f}" for t, v in p["pixel_auroc_per_type"].items()))
    print(
        "\n| fold | probe cell AUROC (held out) | PaDiM same cells "
        "| probe within image | PaDiM within image |"
    )
    print("|---|---|---|---|---|")
    for k, f in enumerate(folds):
        print(
            f"| {k} | {f['cell_auroc_probe']:.3f} | {f['cell_auroc_padim']:.3f} | "
            f"{f['within_image_auroc_probe']:.3f} | {f['within_image_auroc_padim']:.3f} |"
        )
    print(
        f"\ngood tiles' variance along the probe direction: {share:.4f} of the total "
        f"(uniform: {1 / len(w):.4f})"
    )
    for k, v in result["probe"]["z_percentiles_5_50_95"].items():
        print(f"z along it, {k}: 5/50/95th percentiles " + " / ".join(f"{x:.2f}" for x in v))
    print("\n| good-only variant | image AUROC | pixel AUROC | AU-PRO | uneven pixel AUROC |")
    print("|---|---|---|---|---|")
    for v in variants:
        print(
            f"| {v['variant']} | {v['image_auroc']:.3f} | {v['pixel_auroc']:.3f} | {v['au_pro']:.3f} | "
            f"{v['uneven_pixel_auroc']:.3f} |"
        )
    out = HERE / "results" / "uneven.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"\n{result['seconds']:.0f} s; wrote {out}")


if __name__ == "__main__":
    main()

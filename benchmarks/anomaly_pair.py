"""Re-score saved station folds with PaDiM and PatchCore evidence together (issue 13).

    python benchmarks/anomaly_pair.py --save DIR [--save DIR ...] --cache DIR [--fit-banks 2048,...]
                                      [--out benchmarks/results/anomaly_pair.json]

Each ``--save DIR`` is what ``benchmarks/supervised.py --save DIR --cache CACHE --param
anomaly='"patchcore"' --param anomaly_bank=N --param score='"fused"'`` wrote: one trained
PatchCore station per fold. The trained heads of every station run are the same (same seed and
threads), so each fold's first saved model is also given back the PaDiM head the shipped
defaults fit (the model's own ``fit_anomaly_head`` on the fold's good training rows) and its
fusion statistics learnt again on the fold's validation good parts (the model's own
``_choose_score``): that is the shipped three-evidence score, re-scored. ``--fit-banks`` fits
PatchCore heads of other coreset sizes the same way.

Every evidence is standardised on the fold's validation good parts, as the fused score does,
and the sum of a model's three standardised evidences is checked against its finished
``predict_bank`` scores. Candidates: ``padim`` (the shipped score), ``patchcoreN`` (a PatchCore
station's score), ``padim+patchcoreN`` (four evidences summed) and ``padim|patchcoreN`` (the two
anomaly peaks averaged, so the anomaly's weight stays 1). The criterion is the benchmark's: the
mean over folds of each fold's validation partial AUROC to 5% FRR; the pooled test folds are
reported, never chosen on.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def standardised(model: Any, bank: Any, rows: np.ndarray, geometries: list[Any]) -> np.ndarray:
    """``(N, 3)`` the model's standardised evidence of bank rows, checked against its finished scores.

    The graph gives the standardised log-odds as ``defect_score`` and the standardised maps as
    ``fusion_maps``; the finishing adds the maps' peaks inside each image, ``margin`` cells from
    the padding, as here.
    """
    import torch

    from flawscope.data.outputs import in_image_peaks
    from flawscope.features.cache import STRIDE

    names = model.declaration().output_names
    head = model.head()
    with torch.inference_mode():
        outs = [
            head(bank.features[torch.from_numpy(rows[s : s + 32])].float()) for s in range(0, len(rows), 32)
        ]
    raw = {name: torch.cat([o[j] for o in outs]).numpy() for j, name in enumerate(names)}
    # each map's peak inside the image, as the finishing takes it (one channel at a time)
    margin = model._fusion_margin() or 0
    peaks = np.column_stack([
        in_image_peaks(raw["fusion_maps"][:, [c]], geometries, model.preprocessing_, STRIDE, margin)
        for c in range(raw["fusion_maps"].shape[1])
    ])  # fmt: skip
    z = np.column_stack([raw["defect_score"], peaks]).astype(np.float64)
    finished = model.predict_bank(bank, rows, geometries).scores
    gap = float(np.abs(z.sum(axis=1) - finished).max())
    if gap > 1e-3:
        raise SystemExit(f"the standardised evidence does not add up to the finished score (gap {gap:.2e})")
    return z


def main() -> None:
    import torch

    from flawscope.data.preprocess import geometry_of
    from flawscope.evaluate.crossval import validation_metrics
    from flawscope.features.cache import FeatureBank
    from flawscope.models.io import load_model
    from flawscope.models.station import fit_anomaly_head
    from run_record import RunRecord
    from supervised import bank_key, load, pooled_line, pooled_metrics, splits

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--save", action="append", required=True, help="a --save folder of PatchCore stations"
    )
    parser.add_argument("--cache", required=True, help="their feature cache")
    parser.add_argument("--dataset", default="magnetic_tile")
    parser.add_argument(
        "--fit-banks", default="", help="PatchCore banks to fit here as well (e.g. 2048), comma-separated"
    )
    parser.add_argument("--out", default=str(HERE / "results" / "anomaly_pair.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    record = RunRecord()
    samples, images, targets = load(args.dataset)
    folds = splits(args.dataset, samples)
    first, _ = load_model(Path(args.save[0]) / f"{args.dataset}-segment" / "fold0")
    path = Path(args.cache) / f"{args.dataset}-segment-{bank_key(first)}-bank.safetensors"
    if not path.exists():
        raise SystemExit(f"{path}: no feature bank of these models in the cache")
    bank = FeatureBank.load(path)
    defective = np.array([0 if c == "good" else 1 for c in targets.classes])
    # per fold: the standardised evidence of its validation + test images, by name; a validation
    # image of one fold is a test image of another, so nothing is kept per image
    per_fold: list[dict[str, Any]] = []
    for fold, split in enumerate(folds):
        val, test = list(split.validation), list(split.test)
        both = val + test
        # bank rows come in bank order: one call per part keeps the images' order, which is checked
        rows = np.concatenate([bank.rows(val, views=False), bank.rows(test, views=False)])
        if list(bank.image[rows]) != both:
            raise SystemExit(f"fold {fold}: the bank rows are not in the split's order")
        z: dict[str, np.ndarray] = {}
        for save in args.save:
            model, _ = load_model(Path(save) / f"{args.dataset}-segment" / f"fold{fold}")
            geometries = [geometry_of(images[i].shape, model.preprocessing_) for i in both]
            found_z = standardised(model, bank, rows, geometries)
            for key, column in (("log_odds", 0), ("defect", 2)):
                # the trained heads are the same in every saved run: their evidence must agree
                assert key not in z or np.allclose(z[key], found_z[:, column], atol=1e-4), (key, fold, save)
                z[key] = found_z[:, column]
            z[f"patchcore{int(model.params['anomaly_bank'])}"] = found_z[:, 1]
        labels = np.array([model._image_class(targets.classes[i]) for i in bank.image])
        train_rows = bank.rows(list(split.train), views=False)
        good_rows = train_rows[labels[train_rows] == model._image_class("good")]
        val_rows = bank.rows(val, views=False)
        fitted = [("padim", None)] + [("patchcore", int(b)) for b in args.fit_banks.split(",") if b]
        for kind, size in fitted:
            model.params["anomaly"] = kind
            if size is not None:
                model.params["anomaly_bank"] = size
            model.anomaly_ = fit_anomaly_head(model, bank, good_rows)
            model.head_, model.fusion_, model.score_ = None, None, "class"
            model.score_ = model._choose_score(bank, val_rows, labels)
            found_z = standardised(model, bank, rows, geometries)
            name = kind if size is None else f"patchcore{size}"
            assert np.allclose(z["log_odds"], found_z[:, 0], atol=1e-4), ("log_odds", fold, name)
            assert np.allclose(z["defect"], found_z[:, 2], atol=1e-4), ("defect", fold, name)
            z[name] = found_z[:, 1]
        per_fold.append({"validation": np.arange(len(val)), "test": np.arange(len(val), len(both)),
                         "images": np.array(both), "z": z})  # fmt: skip
        print(f"fold {fold}: {len(val)} validation, {len(test)} test images scored", flush=True)

    def candidates(z: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        banks = sorted((k for k in z if k.startswith("patchcore")), key=lambda k: int(k[9:]))
        base = z["log_odds"] + z["defect"]
        return {
            "padim": base + z["padim"],
            **{b: base + z[b] for b in banks},
            **{f"padim+{b}": base + z["padim"] + z[b] for b in banks},
            **{f"padim|{b}": base + (z["padim"] + z[b]) / 2 for b in banks},
        }

    scored = [candidates(f["z"]) for f in per_fold]
    tested = np.concatenate([f["images"][f["test"]] for f in per_fold])
    y = defective[tested]
    classes = np.array([str(targets.classes[i]) for i in tested])
    rows_out = []
    for name in scored[0]:
        pauroc = [
            validation_metrics(c[name][v], defective[f["images"][v]])["validation_pauroc"]
            for c, f in zip(scored, per_fold, strict=True)
            for v in [f["validation"]]
        ]
        s = np.concatenate([c[name][f["test"]] for c, f in zip(scored, per_fold, strict=True)])
        second_good = np.sort(s[y == 0])[::-1][1]
        missed = {
            str(c): int(np.sum((s <= second_good) & (classes == c))) for c in sorted(set(classes) - {"good"})
        }
        rows_out.append({"candidate": name, **pooled_metrics(pauroc, s, y), "missed_per_type": missed})
    print("candidate | val pAUROC@5% (mean; per fold) | image AUROC | AP | recall@FRR<=1% pooled | missed")
    for r in rows_out:
        print(pooled_line(r["candidate"], r), f"| {r['missed']} {r['missed_per_type']}")
    record.write(args.out, args, candidates=rows_out)


if __name__ == "__main__":
    main()

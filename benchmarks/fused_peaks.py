"""Re-score saved cross-validation folds with each ``fused_peaks`` rule, without retraining (issue 13).

    python benchmarks/fused_peaks.py --save DIR --cache DIR [--dataset magnetic_tile]
                                     [--rules canvas,image,inner] [--defects probability,log_odds]
                                     [--out benchmarks/results/fused_peaks.json]

``DIR`` is what ``benchmarks/supervised.py --save DIR --cache CACHE --param anomaly='"padim"' --param
score='"fused"'`` wrote (one trained segmenter per fold) and its feature cache. ``fused_peaks`` changes
no training: only where the fused score takes its two maps' peaks, and so the standardisation
the model learns on its validation good parts; nor does ``fused_defect`` (the defect map's peak
read as a probability or as log-odds), so ``--defects`` crosses both with the rules. For each
rule every fold's saved model is given the rule, learns that standardisation again on the
fold's validation good parts (the model's own ``_choose_score``), and scores its validation
and test images through ``predict_bank`` (the finishing the runtime uses). The criterion is the
benchmark's: the mean over folds of each fold's validation partial AUROC to 5% FRR; the pooled
test folds are reported, never chosen on.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    import torch

    from flawscope.data.preprocess import geometry_of
    from flawscope.decide.calibration import calibrate
    from flawscope.decide.verdict import decide_many, outcomes
    from flawscope.evaluate.crossval import validation_metrics
    from flawscope.features.cache import FeatureBank
    from flawscope.models.io import load_model
    from run_record import RunRecord
    from supervised import load, pooled_line, pooled_metrics, splits

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--save", required=True, help="the --save folder of a benchmarks/supervised.py run")
    parser.add_argument("--cache", required=True, help="its feature cache")
    parser.add_argument("--dataset", default="magnetic_tile")
    parser.add_argument("--rules", default="canvas,image,inner")
    parser.add_argument("--defects", default="probability", help="fused_defect values crossed with --rules")
    parser.add_argument("--folds", default="", help="only these folds (e.g. 0,1), default all")
    parser.add_argument("--out", default=str(HERE / "results" / "fused_peaks.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    record = RunRecord()
    samples, images, targets = load(args.dataset)
    folds = splits(args.dataset, samples)
    found = sorted(Path(args.cache).glob(f"{args.dataset}-segment-*-bank.safetensors"))
    if len(found) != 1:
        raise SystemExit(f"{args.cache}: expected one {args.dataset} segment bank, found {len(found)}")
    bank = FeatureBank.load(found[0])
    defective = np.array([0 if c == "good" else 1 for c in targets.classes])
    # a rule is "FUSED_PEAKS" (with the first --defects value alone) or "FUSED_PEAKS/FUSED_DEFECT"
    defects = args.defects.split(",")
    rules = [r if len(defects) == 1 else f"{r}/{d}" for r in args.rules.split(",") for d in defects]
    per_rule: dict[str, dict[str, Any]] = {
        r: {"validation_pauroc": [], "scores": np.full(len(images), np.nan), "calibrated": [""] * len(images)}
        for r in rules
    }
    only = {int(k) for k in args.folds.split(",") if k}
    for fold, split in enumerate(folds):
        if only and fold not in only:
            continue
        model, _ = load_model(Path(args.save) / f"{args.dataset}-segment" / f"fold{fold}")
        pre = model.preprocessing_
        assert pre is not None
        labels = np.array([model._image_class(targets.classes[i]) for i in bank.image])
        val, test = list(split.validation), list(split.test)
        val_rows, test_rows = bank.rows(val, views=False), bank.rows(test, views=False)
        for rule in rules:
            peaks, _, defect = rule.partition("/")
            model.params["fused_peaks"], model.params["fused_defect"] = peaks, defect or defects[0]
            model.head_, model.fusion_, model.score_ = None, None, "class"
            model.score_ = model._choose_score(bank, val_rows, labels)
            vscores = model.predict_bank(
                bank, val_rows, [geometry_of(images[i].shape, pre) for i in val]
            ).scores
            tpred = model.predict_bank(bank, test_rows, [geometry_of(images[i].shape, pre) for i in test])
            tscores = tpred.scores
            # a station's operating point: thresholds calibrated on the fold's validation good parts
            cal = calibrate(vscores[defective[val] == 0], target_frr=0.01, require_bound=False)
            for i, outcome in zip(
                test, outcomes(decide_many(tpred, cal.thresholds, regions=False)), strict=True
            ):
                per_rule[rule]["calibrated"][i] = outcome
            per_rule[rule]["validation_pauroc"].append(
                validation_metrics(vscores, defective[val])["validation_pauroc"]
            )
            per_rule[rule]["scores"][test] = tscores
        print(
            f"fold {fold}: " + ", ".join(f"{r} {per_rule[r]['validation_pauroc'][-1]:.4f}" for r in rules),
            flush=True,
        )
    tested = np.flatnonzero(~np.isnan(per_rule[rules[0]]["scores"]))
    y = defective[tested]
    rows = []
    for rule in rules:
        s = per_rule[rule]["scores"][tested]
        cal_ = per_rule[rule]["calibrated"]
        good = np.sort(s[y == 0])[::-1]
        per_type = {
            c: float(np.mean([s[j] > good[1] for j, i in enumerate(tested) if targets.classes[i] == c]))
            for c in sorted({targets.classes[i] for i in tested} - {"good"})
        }
        rows.append(
            {
                "fused_peaks": rule.partition("/")[0],
                "fused_defect": rule.partition("/")[2] or defects[0],
                **pooled_metrics(per_rule[rule]["validation_pauroc"], s, y),
                "calibrated_frr": float(np.mean([cal_[i] == "fail" for i in tested if defective[i] == 0])),
                "calibrated_recall": float(np.mean([cal_[i] == "fail" for i in tested if defective[i] == 1])),
                "recall_above_second_good_per_type": per_type,
            }
        )
    print("peaks/defect | val pAUROC@5% (mean; per fold) | image AUROC | AP | recall@FRR<=1% (pooled test)")
    for r in rows:
        print(pooled_line(f"{r['fused_peaks']}/{r['fused_defect']}", r))
    record.write(args.out, args, rules=rows)


if __name__ == "__main__":
    main()

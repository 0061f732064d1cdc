"""How much a retrained head varies from one seed to the next, alone and as an ensemble.

Usage::

    python benchmarks/head_variance.py --loop DIR/loop-uneven [--seeds 6] [--members 3] [--old 3]

``--loop`` is a work folder of ``benchmarks/improve.py --part loop`` (its live model, base set and
exported feedback). The script builds the labelled set the retraining builds
(:func:`flawscope.improve.labelled.labelled_for_retraining`, the base model's calibration images
held out), extracts the features once (augmented views as in training; cached in ``--loop``), and
fixes the validation split (seed 0). It then trains the station's trained head (``mixed``, no
PaDiM head: it does not vary) from ``--seeds`` seeds with the retraining's schedule
(``smooth`` 3), ``--old`` more with the earlier one (``smooth`` 1), and averages disjoint groups
of ``--members`` heads of the first kind into ensembles. Only the seed of the head (initial
weights, batches, flips, synthetic anomalies) changes; the data, views and split stay.

Measured, never on the loop's held-out comparison parts: on the validation images (good and
defective parts of the retraining's training side), each model's AUROC and, at the threshold that
stops 6% of the base model's calibration good parts (1% reject target + 5% review band), the
validation defects caught and the validation good parts stopped; between two models of a kind,
how many validation images change decision. Prints a table; JSON to
``benchmarks/results/head_variance.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
BUDGET = 0.06  # the live model's share of good parts stopped: 1% reject target + 5% review band


def load_avg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def auroc(scores: np.ndarray, defect: np.ndarray) -> float:
    """Probability that a defect scores above a good part (ties count half)."""
    pos, neg = scores[defect], scores[~defect]
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def build(loop: Path, cache: Path) -> dict[str, Any]:
    """The retraining's labelled set, its model (no PaDiM head), the bank and the fixed split."""
    from flawscope.bundle import read_bundle
    from flawscope.data.splits import file_hashes
    from flawscope.data.splits import holdout as holdout_split
    from flawscope.declaration import GOOD
    from flawscope.features.cache import FeatureBank
    from flawscope.improve.feedback import read_feedback
    from flawscope.improve.labelled import candidate_params, check_task, labelled_for_retraining
    from flawscope.improve.retrain import _original, base_holdout, base_task_of, without_training_images
    from flawscope.models import get_model_class
    from flawscope.models.supervised import SupervisedModel
    from flawscope.models.train_supervised import calibration_holdout, read_labelled
    from flawscope.types import Targets

    base = read_bundle(loop / "live-trained")
    feedback = read_feedback(loop / "feedback")
    original = _original(base, loop / "loop-base", labelled=True)
    feedback = without_training_images(feedback, original)
    kind = check_task("mixed")
    made = labelled_for_retraining(original.root, feedback, kind)
    params = candidate_params(base.manifest, kind, base_task_of(base.manifest), {"ensemble": 1, "threads": 1})
    samples = list(made.labelled.samples)
    held_hashes = base_holdout(base.manifest, made.original)
    train_idx, held_idx = calibration_holdout(samples, 0.4, 0, file_hashes(samples), held_hashes or None)
    model = get_model_class("mixed")(**params)
    assert isinstance(model, SupervisedModel)
    fitted = read_labelled([samples[i] for i in train_idx], masks=True)
    held = read_labelled([samples[i] for i in held_idx], masks=False)
    n_fit = len(fitted.images)
    images = [*fitted.images, *held.images]
    classes = (*fitted.targets.classes, *(GOOD for _ in held.images))
    masks = (*fitted.targets.masks, *(np.zeros(im.shape[:2], bool) for im in held.images))
    targets = Targets(classes, masks)
    share = float(model.params["validation"])
    split = holdout_split([replace(s, group=None) for s in fitted.samples], share, 0)
    train, val = list(split.train), list(split.validation)
    path = cache / "head_variance_bank.safetensors"
    if path.is_file():
        bank = FeatureBank.load(path)
        model.classes_ = model._classes_for(targets)
        model.preprocessing_ = model._make_preprocessing([images[i] for i in train])
    else:
        bank = model.make_bank(images, targets, train)
        bank.save(path, "head_variance")
    return {
        "model": model, "bank": bank, "targets": targets, "train": train, "val": val,
        "held": list(range(n_fit, len(images))), "params": params, "n_fit": n_fit,
    }  # fmt: skip


def scores_of(head: torch.nn.Module, features: torch.Tensor) -> np.ndarray:
    """``1 - P(good)`` of the head's image logits, as log-odds (no float32 saturation)."""
    with torch.inference_mode():
        out = [head(features[i : i + 32].float())[1] for i in range(0, len(features), 32)]
    logits = torch.cat(out)
    return (torch.logsumexp(logits[:, 1:], dim=1) - logits[:, 0]).numpy()  # good is class 0


def judge(val_scores: np.ndarray, held_scores: np.ndarray, defect: np.ndarray) -> dict[str, Any]:
    """AUROC on validation, and what a threshold stopping 6% of the calibration good parts does there."""
    k = math.ceil(BUDGET * len(held_scores))
    threshold = float(np.sort(held_scores)[::-1][k - 1])
    stopped = val_scores >= threshold
    return {
        "auroc": round(auroc(val_scores, defect), 4),
        "defects_caught": int((stopped & defect).sum()),
        "good_stopped": int((stopped & ~defect).sum()),
        "stopped": stopped.tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--loop", type=Path, required=True, help="A loop run's folder (…/loop-uneven).")
    parser.add_argument("--seeds", type=int, default=6, help="Heads with the retraining's schedule.")
    parser.add_argument("--members", type=int, default=3, help="Heads per ensemble.")
    parser.add_argument("--old", type=int, default=3, help="Heads with the earlier schedule (smooth 1).")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    out: dict[str, Any] = {"load_avg": [load_avg()], "loop": str(args.loop)}
    built = build(args.loop, args.loop)
    model, bank, targets = built["model"], built["bank"], built["targets"]
    out["extract_s"] = round(time.perf_counter() - started, 1)
    from flawscope.declaration import GOOD
    from flawscope.models.ensemble import HeadEnsemble
    from flawscope.models.training import TrainLog, calibrate_head, loss_weights

    val_rows = bank.rows(built["val"], views=False)
    held_rows = bank.rows(built["held"], views=False)
    train_rows = bank.rows(built["train"], views=True)
    defect = np.array([targets.classes[i] != GOOD for i in bank.image[val_rows]])
    labels = np.array([model._image_class(targets.classes[i]) for i in bank.image])
    out["validation"] = {"images": len(val_rows), "defects": int(defect.sum()), "good": int((~defect).sum())}
    out["calibration_good"] = len(held_rows)
    val_x, held_x = bank.features[torch.from_numpy(val_rows)], bank.features[torch.from_numpy(held_rows)]
    results: dict[str, list[dict[str, Any]]] = {"single_smooth3": [], "single_smooth1": [], "ensemble": []}
    heads: list[torch.nn.Module] = []
    target = HERE / "results" / "head_variance.json"

    def save() -> None:
        out["results"] = results
        out["seconds"] = round(time.perf_counter() - started, 1)
        target.parent.mkdir(exist_ok=True)
        target.write_text(json.dumps(out, indent=1))

    runs = [("single_smooth3", s, 3) for s in range(args.seeds)]
    runs += [("single_smooth1", s, 1) for s in range(args.old)]
    for name, seed, smooth in runs:
        model.params = {**model.params, "smooth": smooth}
        model.config = replace(model.config, seed=seed)
        begun = time.process_time()
        model.fit_bank(bank, targets, built["train"], built["val"])
        log = model.training_["log"]
        head = model.head_module_
        row = judge(scores_of(head, val_x), scores_of(head, held_x), defect)
        row |= {
            "seed": seed,
            "best_epoch": log["best_epoch"],
            "epochs_run": log["epochs_run"],
            "temperature": round(log["temperature"], 3),
            "cpu_s": round(time.process_time() - begun, 1),
        }
        results[name].append(row)
        if name == "single_smooth3":
            heads.append(head)
        print(name, {k: v for k, v in row.items() if k != "stopped"}, flush=True)
        save()
        if name == "single_smooth3" and len(heads) % args.members == 0:
            group = heads[-args.members :]
            ensemble = HeadEnsemble(list(group)).eval()  # type: ignore[arg-type]
            weights = loss_weights(group[0], bank, train_rows, labels, None)  # type: ignore[arg-type]
            log_e = TrainLog()
            calibrate_head(ensemble, bank, val_rows, labels, *weights, 1.0, log_e)
            row = judge(scores_of(ensemble, val_x), scores_of(ensemble, held_x), defect)
            row |= {"seeds": [seed - args.members + 1 + i for i in range(args.members)],
                    "temperature": round(log_e.temperature, 3)}  # fmt: skip
            results["ensemble"].append(row)
            print("ensemble", {k: v for k, v in row.items() if k != "stopped"}, flush=True)
            save()
    summary = {}
    for name, rows in results.items():
        if not rows:
            continue
        pairs = list(itertools.combinations(rows, 2))
        flips = [int(np.sum(np.array(a["stopped"]) != np.array(b["stopped"]))) for a, b in pairs]
        summary[name] = {
            "n": len(rows),
            "auroc": [r["auroc"] for r in rows],
            "defects_caught": [r["defects_caught"] for r in rows],
            "good_stopped": [r["good_stopped"] for r in rows],
            "temperature": [r["temperature"] for r in rows],
            "best_epoch": [r.get("best_epoch") for r in rows],
            "decision_changes_between_two": flips,
        }
    out["summary"] = summary
    out["load_avg"].append(load_avg())
    out["date"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    save()
    print(f"validation: {out['validation']}; calibration good parts: {out['calibration_good']}")
    print("| heads | AUROC | defects caught | good stopped | temperature | best epoch | decisions changed |")
    print("|---|---|---|---|---|---|---|")
    for name, s in summary.items():
        print(f"| {name} ({s['n']}) | {s['auroc']} | {s['defects_caught']} | {s['good_stopped']} | "
              f"{s['temperature']} | {s['best_epoch']} | {s['decision_changes_between_two']} |")  # fmt: skip
    print(f"wrote {target}")


if __name__ == "__main__":
    main()

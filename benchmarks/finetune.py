"""Frozen trunk, last blocks or the whole trunk fine-tuned: which classifier wins on this CPU (issue 13).

    python benchmarks/finetune.py [--datasets neu_surface,elpv] [--variants frozen,last blocks,full]
                                  [--minutes 20] [--image-size 256] [--backbone efficientnet_lite0]
                                  [--out FILE.json]

Three ways to train the same classifier head (:class:`flawscope.models.heads.DefectHead`, no
segmentation) on the same split (NEU's ``splits.csv``; ELPV's stratified 75/25, seed 0, as in
``benchmarks/supervised.py``), each given the same wall-clock budget:

* ``frozen``: the head on cached embedder features (what ``flawscope train --task classify`` does).
* ``last blocks``: the trunk's stride-8 map is cached; the stride-16 blocks (6 MBConv blocks of
  EfficientNet-Lite0, initialised from ImageNet), the fusion and the head are trained.
* ``full``: every trunk weight is trained from the images (flips as augmentation).

Batch norm keeps its ImageNet statistics in all three (small batches). The training side is
the benchmark's training split only; its validation split (15% of the training groups) chooses
the epoch: the reported ``accuracy`` is the test accuracy of the epoch with the best validation
accuracy (the earliest on ties), never of the best test epoch. The test accuracy of every epoch is
kept in the history (and the last epoch's as ``final_accuracy``) to show the curve, not to choose.
No hyperparameter was chosen on the test split: the same learning rates (head 2e-3, trunk 2e-4)
and schedule for all, fixed before the runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def _data(
    name: str,
) -> tuple[list[np.ndarray], np.ndarray, list[str], np.ndarray, np.ndarray, np.ndarray]:
    import sys

    sys.path.insert(0, str(HERE))
    from supervised import load, splits  # the same data and splits as the main benchmark

    samples, images, targets = load(name)
    split = splits(name, samples)[0]
    classes = sorted(set(targets.classes), key=lambda c: (c != "good", c))
    labels = np.array([classes.index(c) for c in targets.classes])
    train, validation = np.array(sorted(split.train)), np.array(sorted(split.validation))
    return images, labels, classes, train, validation, np.array(split.test)


def run(
    name: str, variant: str, minutes: float, size: int = 256, backbone: str = "efficientnet_lite0"
) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F
    from torch import nn

    from flawscope.data.preprocess import to_batch
    from flawscope.features.backbones import BACKBONES, load_backbone
    from flawscope.features.embedder import Embedder
    from flawscope.models.heads import DefectHead
    from flawscope.models.training import choose_threads

    torch.manual_seed(0)
    torch.set_num_threads(choose_threads(None))
    images, labels, classes, train, validation, test = _data(name)
    spec = BACKBONES[backbone]
    from flawscope.data.preprocess import Preprocessing, choose_canvas

    h, w = choose_canvas([im.shape[:2] for im in images], size)
    pre = Preprocessing(h, w, "fit_pad", spec.mean, spec.std)
    trunk = load_backbone(backbone)
    embedder = Embedder(trunk, 3).eval()
    start = time.perf_counter()

    def batches_of(index: np.ndarray, size: int = 16) -> list[np.ndarray]:
        return [index[i : i + size] for i in range(0, len(index), size)]

    cached: torch.Tensor | None = None
    if variant in ("frozen", "last blocks"):
        from flawscope.models.engine import make_runner

        if variant == "frozen":
            runner = make_runner(embedder, h, w, "auto")
        else:
            from flawscope.models.tuned_trunk import Stride8

            runner = make_runner(Stride8(trunk).eval(), h, w, "auto")
        parts = []
        for index in batches_of(np.arange(len(images)), 8):
            batch, _ = to_batch([images[i] for i in index], pre)
            parts.append(runner(batch).to(torch.float16))
        cached = torch.cat(parts)
    cache_s = time.perf_counter() - start

    head = DefectHead(embedder.channels, 32, len(classes), 0, True)
    trainable: list[dict[str, Any]] = [{"params": head.parameters(), "lr": 2e-3}]
    if variant == "last blocks":
        tail = nn.ModuleList(trunk._blocks[trunk.tap8 + 1 :])
        for p in tail.parameters():
            p.requires_grad_(True)
        trainable.append({"params": tail.parameters(), "lr": 2e-4})
    if variant == "full":
        for p in trunk.parameters():
            p.requires_grad_(True)
        trainable.append({"params": trunk.parameters(), "lr": 2e-4})
    optimiser = torch.optim.AdamW(trainable, weight_decay=1e-4)
    counts = np.bincount(labels[train], minlength=len(classes))
    weights = torch.tensor(counts.sum() / (len(classes) * np.maximum(counts, 1)), dtype=torch.float32)
    rng = np.random.default_rng(0)

    def features(index: np.ndarray, flip: bool) -> torch.Tensor:
        if variant == "frozen":
            assert cached is not None
            x = cached[torch.from_numpy(index)].float()
        elif variant == "last blocks":
            assert cached is not None
            f8 = cached[torch.from_numpy(index)].float()
            if flip:
                f8 = f8.flip(-1)
            x = f8
            for block in trunk._blocks[trunk.tap8 + 1 :]:
                x = block(x)
            x = torch.cat([f8, F.interpolate(x, size=f8.shape[-2:], mode="bilinear", align_corners=False)], 1)
            return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        else:
            batch, _ = to_batch([images[i] for i in index], pre)
            x = embedder(torch.from_numpy(batch[:, :, :, ::-1].copy() if flip else batch))
        return x.flip(-1) if flip and variant == "frozen" else x

    def accuracy(images_: np.ndarray) -> float:
        head.eval()
        right = 0
        with torch.no_grad():
            for index in batches_of(images_, 32):
                _, logits = head(features(index, False))
                right += int((logits.argmax(1).numpy() == labels[index]).sum())
        return right / len(images_)

    history = []
    budget = minutes * 60
    epoch = 0
    while time.perf_counter() - start < budget:
        head.train()
        order = rng.permutation(train)
        for index in batches_of(order):
            _, logits = head(features(index, bool(rng.random() < 0.5)))
            loss = F.cross_entropy(logits, torch.from_numpy(labels[index]).long(), weight=weights)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if time.perf_counter() - start > budget:
                break
        epoch += 1
        seconds = round(time.perf_counter() - start, 1)
        history.append(
            {
                "epoch": epoch,
                "seconds": seconds,
                "validation_accuracy": accuracy(validation),
                "test_accuracy": accuracy(test),
            }
        )
        print(
            f"  {name} {variant}: epoch {epoch} validation {history[-1]['validation_accuracy']:.4f} "
            f"test {history[-1]['test_accuracy']:.4f} at {seconds} s",
            flush=True,
        )
    chosen = max(history, key=lambda e: (e["validation_accuracy"], -e["epoch"])) if history else None
    return {
        "dataset": name,
        "variant": variant,
        "backbone": backbone,
        "canvas": [h, w],
        "minutes": minutes,
        "cache_seconds": round(cache_s, 1),
        "epochs": epoch,
        "chosen_epoch": chosen["epoch"] if chosen else None,
        "accuracy": chosen["test_accuracy"] if chosen else None,
        "final_accuracy": history[-1]["test_accuracy"] if history else None,
        "history": history,
        "threads": torch.get_num_threads(),
        "n_train": len(train),
        "n_validation": len(validation),
        "n_test": len(test),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="neu_surface,elpv")
    parser.add_argument("--variants", default="frozen,last blocks,full")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--image-size", type=int, default=256, help="canvas size along the shorter side")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--out", default=str(HERE / "results" / "finetune.json"))
    args = parser.parse_args()
    started, load_before = dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), os.getloadavg()
    rows = [
        run(d, v, args.minutes, args.image_size, args.backbone)
        for d in args.datasets.split(",")
        for v in args.variants.split(",")
    ]
    for r in rows:
        print(
            f"{r['dataset']:12s} {r['variant']:12s} epochs {r['epochs']:3d} accuracy {r['accuracy']} "
            f"(epoch {r['chosen_epoch']}, chosen on validation) final {r['final_accuracy']}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "command": f"python benchmarks/finetune.py --datasets {args.datasets} "
                f"--variants '{args.variants}' --minutes {args.minutes} --image-size {args.image_size} "
                f"--backbone {args.backbone}",
                "started": started,
                "load_average_before": load_before,
                "load_average_after": os.getloadavg(),
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()

"""Splits: stratified, by group, and refused when a group or an image is on both sides."""

from __future__ import annotations

import numpy as np
import pytest

from flawscope.data.labelled import LabelledSample
from flawscope.data.splits import Split, check_disjoint, holdout, kfold
from flawscope.errors import InputError


def _samples(n_groups: int = 30, per_group: int = 4, seed: int = 0) -> list[LabelledSample]:
    rng = np.random.default_rng(seed)
    out = []
    for g in range(n_groups):
        defect = rng.random() < 0.3
        for k in range(per_group):
            cls = "crack" if defect and k == 0 else "good"
            out.append(LabelledSample(f"/d/kos{g:02d}_part{k}.png", cls, None, f"kos{g:02d}"))
    return out


def test_no_group_is_on_both_sides_of_any_fold():
    samples = _samples()
    folds = kfold(samples, 3, seed=1)
    tested = sorted(i for f in folds for i in f.test)
    assert tested == list(range(len(samples)))  # every image is tested exactly once
    for fold in folds:
        sides = {
            name: {samples[i].group for i in getattr(fold, name)} for name in ("train", "validation", "test")
        }
        assert not (sides["train"] & sides["test"]) and not (sides["validation"] & sides["test"])
        assert not (sides["train"] & sides["validation"])
        assert fold.by_group


def test_folds_are_stratified():
    samples = _samples(60, 3, seed=2)
    counts = [sum(samples[i].cls == "crack" for i in fold.test) for fold in kfold(samples, 3)]
    assert max(counts) - min(counts) <= 2


def test_folds_have_about_equal_sizes():
    # kolektorsdd's shape: 50 parts of 7-8 images, about half with one defective image.
    rng = np.random.default_rng(3)
    samples = []
    for g in range(50):
        defect = rng.random() < 0.5
        for k in range(int(rng.integers(7, 9))):
            cls = "defect" if defect and k == 3 else "good"
            samples.append(LabelledSample(f"/d/kos{g:02d}_{k}.png", cls, None, f"kos{g:02d}"))
    folds = kfold(samples, 3, seed=0)
    sizes = [len(f.test) for f in folds]
    assert max(sizes) <= 1.25 * len(samples) / 3 and min(sizes) >= 0.75 * len(samples) / 3, sizes
    for fold in folds:
        share = len(fold.validation) / (len(fold.train) + len(fold.validation))
        assert 0.08 < share < 0.25, share


def test_always_trained_images_are_never_tested():
    samples = _samples()
    keep = list(range(20))
    for fold in kfold(samples, 3, always_train=keep):
        assert not set(fold.test) & set(keep)


def test_a_group_on_both_sides_is_refused_naming_it():
    samples = _samples(4, 2)
    bad = Split(train=(0, 2, 4), validation=(6,), test=(1, 3))  # kos00 in train (0) and test (1)
    with pytest.raises(InputError, match=r"group 'kos00'.*both sides") as err:
        check_disjoint(samples, bad)
    # The file on each side, and every other group that is split too (kos01: 2 and 3).
    assert samples[0].path in str(err.value) and samples[1].path in str(err.value)
    assert "1 more: 'kos01'" in str(err.value)


def test_the_same_image_in_train_and_test_is_refused_by_hash():
    samples = [LabelledSample(f"/d/{i}.png", "good") for i in range(4)]
    hashes = ["a", "b", "c", "a"]  # image 3 has the same content as image 0
    with pytest.raises(InputError, match=r"3.png.*same image as /d/0.png"):
        check_disjoint(samples, Split((0, 1), (2,), (3,)), hashes)


def test_holdout_keeps_groups_together():
    samples = _samples()
    split = holdout(samples, 0.2)
    assert not {samples[i].group for i in split.train} & {samples[i].group for i in split.validation}
    assert 0.1 < len(split.validation) / len(samples) < 0.35


@pytest.mark.parametrize("fraction", [0.15, 0.2, 0.3, 0.4, 0.5])
def test_holdout_holds_out_the_fraction_asked(fraction: float) -> None:
    # 0.4 once held out half (1 / 0.4 rounded to 2 folds): a retrained candidate lost 80 training images.
    samples = [LabelledSample(f"/d/{i}.png", "good" if i % 9 else "crack", None, None) for i in range(600)]
    share = len(holdout(samples, fraction).validation) / len(samples)
    assert abs(share - fraction) < 0.015


def test_more_folds_than_groups_of_a_class_is_refused():
    samples = [LabelledSample(f"/d/{i}.png", "good" if i > 1 else "dent", group=f"g{i}") for i in range(10)]
    with pytest.raises(InputError, match=r"class 'dent'.*2 group"):
        kfold(samples, 3)

import itertools
import json
import math

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from flawscope.errors import InputError
from flawscope.evaluate.metrics import evaluate_scores


def _dataset(rng, n_good=6, n_defect=6, size=(24, 32), kinds=("crack", "hole")):
    """Small random maps; each defect image gets one or two rectangles in its mask."""
    maps, masks, labels, types = [], [], [], []
    for i in range(n_good + n_defect):
        amap = rng.random(size).astype(np.float32)
        mask = np.zeros(size, bool)
        if i >= n_good:
            for _ in range(int(rng.integers(1, 3))):
                y, x = rng.integers(0, size[0] - 5), rng.integers(0, size[1] - 5)
                mask[y : y + int(rng.integers(2, 6)), x : x + int(rng.integers(2, 6))] = True
            amap = amap + 0.3 * mask * rng.random(size).astype(np.float32)
        maps.append(amap)
        masks.append(mask)
        labels.append(int(i >= n_good))
        types.append("good" if i < n_good else kinds[i % len(kinds)])
    scores = [float(m.max()) for m in maps]
    return scores, labels, types, maps, masks


def _reference_au_pro(maps, masks, fpr_limit=0.3):
    """Straightforward AU-PRO: one threshold per distinct value, every pixel compared each time."""
    values = np.concatenate([m.ravel() for m in maps])
    defect = np.concatenate([m.ravel() for m in masks])
    negatives = values[~defect]
    regions = []
    for amap, mask in zip(maps, masks, strict=True):
        labelled, n = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [amap[labelled == k] for k in range(1, n + 1)]
    points = [(0.0, 0.0)]
    for t in np.unique(values)[::-1]:
        fpr = float(np.mean(negatives >= t))
        pro = float(np.mean([np.mean(r >= t) for r in regions]))
        points.append((fpr, pro))
    area = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


def test_perfect_separation_gives_one():
    scores = [0.1, 0.2, 0.3, 0.8, 0.9]
    summary = evaluate_scores(scores, [0, 0, 0, 1, 1], ["good"] * 3 + ["crack"] * 2)
    m = summary.overall
    assert m.image_auroc == 1.0
    assert m.best_f1 == 1.0
    assert 0.3 < m.best_f1_threshold <= 0.8
    assert m.recall_at_frr == 1.0 and m.achieved_frr == 0.0 and m.precision_at_frr == 1.0
    assert m.pixel_auroc is None and m.au_pro is None
    assert any("no anomaly maps" in note for note in m.notes)


def test_random_scores_give_about_one_half():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 4000)
    types = ["good" if y == 0 else "crack" for y in labels]
    m = evaluate_scores(rng.random(4000), labels, types).overall
    assert abs(m.image_auroc - 0.5) < 0.04
    assert m.recall_at_frr < 0.05


def test_map_equal_to_mask_gives_perfect_pixel_metrics():
    rng = np.random.default_rng(2)
    _, labels, types, _, masks = _dataset(rng)
    maps = [m.astype(np.float32) for m in masks]
    m = evaluate_scores([float(x.max()) for x in maps], labels, types, maps, masks).overall
    assert m.pixel_auroc == pytest.approx(1.0)
    assert m.au_pro == pytest.approx(1.0)
    assert m.n_regions >= 6


def _two_regions():
    mask = np.zeros((40, 40), bool)
    mask[2:4, 2:4] = True  # small region A: 4 px
    mask[20:40, 20:40] = True  # large region B: 400 px
    return mask


def test_lighting_one_of_two_regions_gives_half_pro():
    mask = _two_regions()
    rng = np.random.default_rng(3)
    amap = rng.random(mask.shape).astype(np.float32) * 0.1
    amap[2:4, 2:4] = 1.0
    amap[20:40, 20:40] = -1.0  # below every defect-free pixel: found only at FPR 1
    good = rng.random(mask.shape).astype(np.float32) * 0.1
    summary = evaluate_scores([0.1, 1.0], [0, 1], ["good", "crack"], [good, amap], [None, mask])
    # Per-region overlap weighs the 4 px region like the 400 px one; pixel TPR would be ~1 %.
    assert summary.overall.au_pro == pytest.approx(0.5, abs=1e-9)
    assert summary.overall.n_regions == 2


def test_half_lit_pro_interpolates_towards_full_overlap():
    mask = _two_regions()
    amap = np.zeros(mask.shape, np.float32)
    amap[2:4, 2:4] = 1.0  # region B ties with the background at 0
    m = evaluate_scores([1.0], [1], ["crack"], [amap], [mask]).overall
    # Curve (0, 0.5) -> (1, 1): mean height over [0, 0.3] is 0.5 + 0.5 * 0.15.
    assert m.au_pro == pytest.approx(0.575)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_au_pro_and_pixel_auroc_match_reference(seed):
    rng = np.random.default_rng(seed)
    scores, labels, types, maps, masks = _dataset(rng)
    maps = [np.round(m, 2) for m in maps]  # ties between pixels, as in quantised maps
    summary = evaluate_scores(scores, labels, types, maps, masks)
    values = np.concatenate([m.ravel() for m in maps])
    truth = np.concatenate([m.ravel() for m in masks])
    assert summary.pixel_method.startswith("exact")
    assert summary.overall.au_pro == pytest.approx(_reference_au_pro(maps, masks), abs=1e-9)
    assert summary.overall.pixel_auroc == pytest.approx(roc_auc_score(truth, values), abs=1e-12)
    assert summary.overall.pixel_auroc_error_bound == 0.0


def test_binned_pixel_metrics_are_close_to_exact():
    rng = np.random.default_rng(7)
    scores, labels, types, maps, masks = _dataset(rng, n_good=10, n_defect=10, size=(60, 50))
    maps = [np.exp(6 * m) for m in maps]  # heavy tail: the bins must still resolve the bulk
    exact = evaluate_scores(scores, labels, types, maps, masks)
    binned = evaluate_scores(scores, labels, types, maps, masks, exact_pixel_limit=0)
    assert binned.pixel_method.startswith("binned")
    pairs = zip(exact.per_type.values(), binned.per_type.values(), strict=True)
    for a, b in [(exact.overall, binned.overall), *pairs]:
        assert abs(a.pixel_auroc - b.pixel_auroc) <= b.pixel_auroc_error_bound + 1e-12
        assert b.pixel_auroc_error_bound < 1e-4
        assert b.au_pro == pytest.approx(a.au_pro, abs=1e-4)


def test_recall_at_frr_hand_computed():
    goods = list(np.arange(100.0))  # 0 .. 99
    defects = [50.5, 98.5, 99.5, 120.0]
    m = evaluate_scores(goods + defects, [0] * 100 + [1] * 4, ["good"] * 100 + ["dent"] * 4).overall
    # At most one good of 100 may score >= threshold: the lowest observed score above 98 is 98.5.
    assert m.threshold_at_frr == 98.5
    assert m.achieved_frr == pytest.approx(0.01)
    assert m.recall_at_frr == pytest.approx(0.75)
    assert m.precision_at_frr == pytest.approx(0.75)


def test_recall_at_frr_above_every_score():
    m = evaluate_scores([1.0, 2.0, 3.0, 0.5], [0, 0, 0, 1], ["good"] * 3 + ["dent"]).overall
    assert m.threshold_at_frr > 3.0
    assert m.achieved_frr == 0.0 and m.recall_at_frr == 0.0 and m.precision_at_frr is None


def test_per_type_splits_use_goods_plus_that_type():
    rng = np.random.default_rng(8)
    scores, labels, types, maps, masks = _dataset(rng, n_good=8, n_defect=8)
    scores = [0.0] * 8 + [1.0 if t == "crack" else -1.0 for t in types[8:]]  # cracks obvious, holes not
    summary = evaluate_scores(scores, labels, types, maps, masks)
    assert set(summary.per_type) == {"crack", "hole"}
    assert summary.per_type["crack"].image_auroc == 1.0
    assert summary.per_type["hole"].image_auroc == 0.0
    assert summary.per_type["crack"].n_good == 8 and summary.per_type["crack"].n_defect == 4
    keep = [i for i, t in enumerate(types) if t in ("good", "hole")]
    values = np.concatenate([maps[i].ravel() for i in keep])
    truth = np.concatenate([masks[i].ravel() for i in keep])
    assert summary.per_type["hole"].pixel_auroc == pytest.approx(roc_auc_score(truth, values))


def test_degenerate_sets_give_none_with_reason():
    only_good = evaluate_scores([0.1, 0.2], [0, 0], ["good", "good"]).overall
    assert only_good.image_auroc is None and only_good.recall_at_frr is None
    assert any("no defective images" in n for n in only_good.notes)
    only_bad = evaluate_scores([0.1, 0.2], [1, 1], ["dent", "dent"]).overall
    assert only_bad.image_auroc is None and only_bad.achieved_frr is None
    assert any("no good images" in n for n in only_bad.notes)
    json.dumps(only_good.to_dict())


def test_empty_defect_masks_add_no_regions():
    rng = np.random.default_rng(9)
    maps = [rng.random((10, 10)).astype(np.float32) for _ in range(3)]
    empty = [np.zeros((10, 10), bool)] * 3
    summary = evaluate_scores([0.1, 0.9, 0.8], [0, 1, 1], ["good", "dent", "dent"], maps, empty)
    m = summary.overall
    assert m.image_auroc == 1.0
    assert m.pixel_auroc is None and m.au_pro is None and m.n_regions == 0
    assert any("no defect pixels" in n for n in m.notes)
    data = summary.to_dict()
    json.dumps(data)
    assert data["overall"]["pixel_auroc"] is None


def test_to_dict_is_json_ready():
    rng = np.random.default_rng(10)
    summary = evaluate_scores(*_dataset(rng))
    data = json.loads(json.dumps(summary.to_dict()))
    assert set(data["per_type"]) == {"crack", "hole"}
    assert math.isclose(data["overall"]["image_auroc"], summary.overall.image_auroc)


@pytest.mark.parametrize(
    ("kwargs", "where"),
    [
        ({"scores": [0.1, float("nan")]}, "scores[1]"),
        ({"labels": [0, 2]}, "labels"),
        ({"defect_types": ["good", "good"]}, "defect_types[1]"),
        ({"maps": [np.zeros((4, 4)), np.zeros((4, 5))]}, "masks[1]"),
        ({"maps": [np.zeros((4, 4)), np.full((4, 4), np.nan)]}, "maps[1]"),
        ({"masks": [np.ones((4, 4), bool), np.zeros((4, 4), bool)]}, "masks[0]"),
        ({"frr": 0.0}, "frr"),
    ],
)
def test_bad_input_names_the_field(kwargs, where):
    args = {
        "scores": [0.1, 0.9],
        "labels": [0, 1],
        "defect_types": ["good", "dent"],
        "maps": [np.zeros((4, 4)), np.ones((4, 4))],
        "masks": [np.zeros((4, 4), bool), np.ones((4, 4), bool)],
    }
    args.update(kwargs)
    with pytest.raises(InputError) as err:
        evaluate_scores(**args)
    assert err.value.where == where

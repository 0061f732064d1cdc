"""The validation report: self-contained HTML, a JSON twin with evaluate_scores's numbers, galleries."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.stats import beta

from flawscope.data.imageio import read_image
from flawscope.decide.thresholds import Thresholds
from flawscope.errors import InputError
from flawscope.evaluate.gallery import HeatScale, draw_tile
from flawscope.evaluate.metrics import evaluate_scores
from flawscope.evaluate.report import GALLERY_SIZE, CalibrationInfo, ReportData, write_report
from flawscope.types import Prediction

SECTIONS = (
    "summary",
    "operating-point",
    "curves",
    "scores",
    "per-type",
    "false-rejects",
    "missed-defects",
    "sign-off",
)
KINDS = ("scratch", "spot")


def make_set(
    root: Path, n_good: int = 18, n_defect: int = 12, size: tuple[int, int] = (48, 64), seed: int = 3
):
    """Images on disk and fake maps that separate good from defective parts, but not perfectly.

    Every fourth good part gets a bright blob in its map (a likely false reject); defect blobs have
    random strength, the first one none at all (a sure miss).
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    paths, labels, types, maps, masks = [], [], [], [], []
    for i in range(n_good + n_defect):
        defect = i >= n_good
        image = cv2.GaussianBlur(rng.normal(140, 30, size).astype(np.float32), (0, 0), 2)
        amap = cv2.GaussianBlur(rng.normal(0, 1, size).astype(np.float32), (0, 0), 3) * 0.3 + 0.2
        cy, cx = int(rng.integers(h // 4, 3 * h // 4)), int(rng.integers(w // 4, 3 * w // 4))
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * 5.0**2)).astype(np.float32)
        mask = np.zeros(size, bool)
        if defect:
            mask = blob > 0.5
            image[mask] -= 80
            amap += 0.0 if i == n_good else float(rng.uniform(0.1, 1.5)) * blob
        elif i % 4 == 0:
            amap += float(rng.uniform(0.6, 1.2)) * blob
        path = root / f"part_{i:03d}.png"
        cv2.imwrite(str(path), np.clip(image, 0, 255).astype(np.uint8))
        paths.append(str(path))
        labels.append(int(defect))
        types.append(KINDS[i % 2] if defect else "good")
        maps.append(amap)
        masks.append(mask)
    scores = np.array([float(m.max()) for m in maps])
    return paths, np.array(labels), types, scores, maps, masks


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory):
    paths, labels, types, scores, maps, masks = make_set(tmp_path_factory.mktemp("parts"))
    summary = evaluate_scores(scores, labels, types, maps=maps, masks=masks)
    return {
        "paths": paths,
        "labels": labels,
        "types": types,
        "scores": scores,
        "maps": maps,
        "masks": masks,
        "summary": summary,
    }


MODEL = {"name": "patchcore", "backbone": "resnet18", "bundle_version": "abc123.t2", "model_hash": "ab" * 32}


def data_for(parts, **overrides) -> ReportData:
    values = {
        "dataset": "synthetic",
        "model": MODEL,
        "paths": parts["paths"],
        "labels": parts["labels"],
        "defect_types": parts["types"],
        "scores": parts["scores"],
        "summary": parts["summary"],
        "maps": parts["maps"],
        "masks": parts["masks"],
    }
    values.update(overrides)
    return ReportData(**values)


class _Links(HTMLParser):
    """Collects tags and every src/href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[tuple[str, str, str]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href"):
                self.links.append((tag, name, value or ""))
            if name == "id" and value:
                self.ids.add(value)


def parse(html: str) -> _Links:
    parser = _Links()
    parser.feed(html)
    return parser


def test_html_is_self_contained_and_has_every_section(parts, tmp_path: Path) -> None:
    out = write_report(data_for(parts), tmp_path / "out" / "report.html")
    html = out.read_text(encoding="utf-8")
    page = parse(html)
    assert "script" not in page.tags
    assert page.links, "the report should embed its figures"
    for tag, name, value in page.links:
        assert value.startswith("data:image/png;base64,"), (
            f"<{tag} {name}> points outside the file: {value[:60]}"
        )
    assert not re.search(r"https?://|url\(", html), "no external URL anywhere (CSS included)"
    assert set(SECTIONS) <= page.ids
    # Two figures and a full gallery on each side: the set has false rejects and misses.
    assert page.tags.count("img") == 2 + 2 * GALLERY_SIZE
    for _, _, value in page.links:
        png = np.frombuffer(base64.b64decode(value.split(",", 1)[1]), np.uint8)
        assert cv2.imdecode(png, cv2.IMREAD_UNCHANGED) is not None


def test_json_twin_has_evaluate_scores_numbers(parts, tmp_path: Path) -> None:
    out = write_report(data_for(parts), tmp_path / "report.html")
    twin = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    summary = parts["summary"]
    assert twin["metrics"] == json.loads(json.dumps(summary.to_dict()))
    head, overall = twin["headline"], summary.overall
    assert head["image_auroc"] == overall.image_auroc
    assert head["pixel_auroc"] == overall.pixel_auroc
    assert head["au_pro"] == overall.au_pro
    # No thresholds: the operating point is the summary's own (FRR target on the test goods).
    assert head["recall"] == overall.recall_at_frr
    assert head["frr"] == overall.achieved_frr
    assert twin["operating_point"]["reject"] == overall.threshold_at_frr
    n_good = int((parts["labels"] == 0).sum())
    k = round(overall.achieved_frr * n_good)
    assert head["false_rejects"] == k
    assert head["frr_upper_bound"] == pytest.approx(beta.ppf(0.95, k + 1, n_good - k))
    rows = {row["defect_type"]: row for row in twin["per_type"]}
    assert set(rows) == {*KINDS, "all defect types"}
    for kind in KINDS:
        m = summary.per_type[kind]
        assert (rows[kind]["image_auroc"], rows[kind]["pixel_auroc"], rows[kind]["au_pro"]) == (
            m.image_auroc,
            m.pixel_auroc,
            m.au_pro,
        )
        assert rows[kind]["recall"] == m.recall_at_frr
        assert rows[kind]["count"] == m.n_defect
    assert twin["model"] == MODEL and twin["dataset"] == "synthetic"


def test_without_thresholds_the_report_says_so(parts, tmp_path: Path) -> None:
    html = write_report(data_for(parts), tmp_path / "report.html").read_text(encoding="utf-8")
    assert "No thresholds were given" in html
    assert "chosen on the test set" in html


def test_thresholds_with_review_band(parts, tmp_path: Path) -> None:
    scores, labels = parts["scores"], parts["labels"]
    good = np.sort(scores[labels == 0])
    reject, review = float(good[-3]), float(good[-8])
    thresholds = Thresholds.explicit(reject=reject, review=review)
    out = write_report(data_for(parts, thresholds=thresholds), tmp_path / "report.html")
    twin = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    point = twin["operating_point"]
    assert point["calibrated"] and point["has_review_band"]
    assert (point["reject"], point["review"]) == (reject, review)
    for truth, value in (("good", 0), ("defect", 1)):
        s = scores[labels == value]
        assert point["counts"][truth] == {
            "fail": int((s >= reject).sum()),
            "review": int(((s >= review) & (s < reject)).sum()),
            "pass": int((s < review).sum()),
            "error": 0,
        }
    bad = scores[labels == 1]
    assert twin["headline"]["recall"] == pytest.approx((bad >= reject).mean())
    assert twin["headline"]["frr"] == pytest.approx((good >= reject).mean())
    html = out.read_text(encoding="utf-8")
    assert ">Review</th>" in html and "No thresholds were given" not in html


def test_parts_a_rule_sends_to_review_have_their_column_without_a_band(parts, tmp_path: Path) -> None:
    # No review band, but no region is ever 10,000 px: every fail becomes a review; one part's
    # map holds a NaN (an error, never passed). Every part must be in a column of its row.
    maps = [m.copy() for m in parts["maps"]]
    maps[1][0, 0] = np.nan
    reject = float(np.sort(parts["scores"][parts["labels"] == 1])[-4])
    thresholds = Thresholds.explicit(reject=reject, min_area_px=10_000)
    out = write_report(data_for(parts, maps=maps, thresholds=thresholds), tmp_path / "report.html")
    point = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))["operating_point"]
    assert not point["has_review_band"] and point["shows_review"] and point["shows_error"]
    assert point["counts"]["defect"]["review"] >= 4 and point["counts"]["good"]["error"] == 1
    html = out.read_text(encoding="utf-8")
    table = re.search(r'<table class="confusion">(.*?)</table>', html, re.S)
    assert table is not None
    for label, truth in (("Good part", "good"), ("Defective part", "defect")):
        row = re.search(rf"<th>{label}</th>(.*?)</tr>", table.group(1), re.S)
        assert row is not None
        cells = [int(c) for c in re.findall(r'<td class="num[^"]*">(\d+)', row.group(1))]
        *outcomes, total = cells
        assert sum(outcomes) == total == sum(point["counts"][truth].values())
    assert ">Review</th>" in html and ">Error</th>" in html and "min_area_px=10000" in html


def test_galleries_show_worst_parts_in_order(parts, tmp_path: Path) -> None:
    reject = float(np.sort(parts["scores"][parts["labels"] == 0])[-4])
    out = write_report(data_for(parts, thresholds=(reject, reject)), tmp_path / "report.html")
    galleries = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))["galleries"]
    scores, labels = parts["scores"], parts["labels"]
    fr, missed = galleries["false_rejects"], galleries["missed_defects"]
    assert fr["total"] == int((scores[labels == 0] >= reject).sum()) > 0
    assert missed["total"] == int((scores[labels == 1] < reject).sum()) > 0
    shown = [t["score"] for t in fr["shown"]]
    assert len(shown) == GALLERY_SIZE and shown == sorted(shown, reverse=True)
    assert shown[0] == scores[labels == 0].max()
    assert all(t["label"] == 0 and t["defect_type"] == "good" for t in fr["shown"])
    shown = [t["score"] for t in missed["shown"]]
    assert len(shown) == GALLERY_SIZE and shown == sorted(shown)
    assert shown[0] == scores[labels == 1].min()
    for tile in fr["shown"] + missed["shown"]:
        assert tile["outcome"] == ("fail" if tile["score"] >= reject else "pass")
        assert Path(tile["path"]).is_file() and tile["problem"] is None
        # A false reject's map reaches the reject threshold, so it has at least one region.
        assert (len(tile["regions"]) > 0) == (parts["maps"][tile["index"]].max() >= reject)


def test_only_gallery_images_are_decoded(parts, tmp_path: Path) -> None:
    calls: list[str] = []

    def loader(path: str) -> np.ndarray:
        calls.append(path)
        return read_image(path)

    out = write_report(data_for(parts, loader=loader), tmp_path / "report.html")
    galleries = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))["galleries"]
    shown = [t["path"] for g in galleries.values() for t in g["shown"]]
    assert sorted(calls) == sorted(shown)
    assert len(calls) == 2 * GALLERY_SIZE < len(parts["paths"])


def test_unreadable_image_is_reported_not_fatal(parts, tmp_path: Path) -> None:
    worst = int(np.argmax(np.where(parts["labels"] == 0, parts["scores"], -np.inf)))
    paths = list(parts["paths"])
    paths[worst] = str(tmp_path / "gone.png")
    out = write_report(data_for(parts, paths=paths), tmp_path / "report.html")
    tiles = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))["galleries"]["false_rejects"][
        "shown"
    ]
    assert tiles[0]["path"] == paths[worst]
    assert "gone.png" in tiles[0]["problem"] and "does not exist" in tiles[0]["problem"]
    assert all(t["problem"] is None for t in tiles[1:])
    html = out.read_text(encoding="utf-8")
    assert "does not exist" in html
    assert parse(html).tags.count("img") == 2 + 2 * GALLERY_SIZE - 1


def test_report_without_maps(parts, tmp_path: Path) -> None:
    summary = evaluate_scores(parts["scores"], parts["labels"], parts["types"])
    data = data_for(parts, summary=summary, maps=None, masks=None)
    out = write_report(data, tmp_path / "report.html")
    twin = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert twin["headline"]["pixel_auroc"] is None and twin["headline"]["au_pro"] is None
    assert any("No anomaly maps" in note for note in twin["notes"])
    assert len(twin["galleries"]["false_rejects"]["shown"]) == GALLERY_SIZE


def test_calibration_info_is_shown(parts, tmp_path: Path) -> None:
    reject = float(parts["scores"].max())
    calibration = CalibrationInfo(target_frr=0.02, frr_upper_bound=0.0188, n_calibration=150)
    out = write_report(
        data_for(parts, thresholds=(reject, reject), calibration=calibration), tmp_path / "r.html"
    )
    twin = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert twin["calibration"]["n_calibration"] == 150
    assert "on 150 held-out good images" in out.read_text(encoding="utf-8")


def test_bad_inputs_name_the_field(parts) -> None:
    with pytest.raises(InputError, match="scores"):
        data_for(parts, scores=parts["scores"][:-1])
    with pytest.raises(InputError, match="labels"):
        data_for(parts, labels=np.full(len(parts["paths"]), 2))
    masks = list(parts["masks"])
    masks[3] = np.zeros((5, 5), bool)
    with pytest.raises(InputError, match=r"masks\[3\]"):
        data_for(parts, masks=masks)
    other = evaluate_scores(parts["scores"][:-1], parts["labels"][:-1], parts["types"][:-1])
    with pytest.raises(InputError, match="summary"):
        data_for(parts, summary=other)
    with pytest.raises(InputError, match="thresholds"):
        data_for(parts, thresholds=(0.5, 0.9))


def test_no_operating_point_without_defects_or_thresholds(parts, tmp_path: Path) -> None:
    good = parts["labels"] == 0
    pick = lambda items: [x for x, g in zip(items, good, strict=True) if g]  # noqa: E731
    summary = evaluate_scores(parts["scores"][good], parts["labels"][good], pick(parts["types"]))
    data = data_for(
        parts,
        paths=pick(parts["paths"]),
        labels=parts["labels"][good],
        defect_types=pick(parts["types"]),
        scores=parts["scores"][good],
        summary=summary,
        maps=None,
        masks=None,
    )
    # No point: the report is written and says so; no outcome is counted or shown.
    out = write_report(data, tmp_path / "none.html")
    twin = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert not twin["operating_point"]["exists"] and twin["headline"]["recall"] is None
    assert twin["galleries"] == {} and all(row["fail"] is None for row in twin["per_type"])
    html = out.read_text(encoding="utf-8")
    assert "No operating point" in html and 'id="operating-point"' not in html
    assert 'class="confusion"' not in html
    # With thresholds, a report of good parts only still works (no curves).
    html = write_report(data_for_thresholds(data, 1.0), tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Curves need both good and defective test parts" in html


def test_a_classifier_of_defect_types_only_gets_its_categories_without_a_point(parts, tmp_path: Path) -> None:
    # A sorting station (NEU-like): every test part is a defect of one of three types, no good
    # part, no thresholds. The categories are the result.
    defect = parts["labels"] == 1
    pick = lambda items: [x for x, d in zip(items, defect, strict=True) if d]  # noqa: E731
    types = pick(parts["types"])
    classes = ("scratch", "spot")
    probs = np.array([[0.9, 0.1] if t == "scratch" else [0.2, 0.8] for t in types], np.float32)
    probs[0] = probs[0][::-1]  # one scratch called a spot
    scores = np.ones(len(types), np.float32)
    prediction = Prediction(scores=scores, class_probs=probs, classes=classes)
    summary = evaluate_scores(scores, parts["labels"][defect], types)
    data = data_for(
        parts,
        paths=pick(parts["paths"]),
        labels=parts["labels"][defect],
        defect_types=types,
        scores=scores,
        summary=summary,
        maps=None,
        masks=None,
        prediction=prediction,
    )
    out = write_report(data, tmp_path / "sort.html")
    twin = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert twin["categories"]["accuracy"] == pytest.approx((len(types) - 1) / len(types))
    html = out.read_text(encoding="utf-8")
    assert 'id="categories"' in html and "No operating point" in html
    assert "Category accuracy" in html
    # Every score is 1 and no part has an outcome: no curves, histogram, per-type rows or galleries.
    assert not [t for t, _, _ in parse(html).links if t == "img"]
    assert not {"operating-point", "curves", "scores", "per-type", "false-rejects"} & parse(html).ids


def data_for_thresholds(data: ReportData, reject: float) -> ReportData:
    from dataclasses import replace

    return replace(data, thresholds=(reject, reject))


def test_tile_is_downscaled_with_overlay_boxes_and_contour() -> None:
    image = np.full((300, 600), 128, np.uint8)
    amap = np.zeros((300, 600), np.float32)
    amap[100:140, 400:480] = 2.0
    mask = np.zeros((300, 600), bool)
    mask[50:90, 50:130] = True
    from flawscope.decide.regions import find_regions

    regions = find_regions(amap, 1.0)
    tile = draw_tile(image, amap, mask, regions, HeatScale(low=0.0, high=1.0))
    assert tile.shape == (128, 256, 3) and tile.dtype == np.uint8
    red, blue = tile[:, :, 0].astype(int), tile[:, :, 2].astype(int)
    hot = (slice(46, 58), slice(172, 202))  # inside the hot box, away from its border
    assert (red[hot] - blue[hot]).mean() > 60, "the hot area is red"
    assert (blue[10:30, 10:30] - red[10:30, 10:30]).mean() > 5, "the cold area is blue"
    magenta = (tile[:, :, 0] > 200) & (tile[:, :, 1] < 80) & (tile[:, :, 2] > 200)
    assert magenta[18:42, 18:58].any() and not magenta[60:, :].any(), "mask contour where the mask is"
    white = tile.min(axis=2) > 230
    assert white[40:62, 168:208].any(), "region box around the hot area"


def test_build_report_from_an_evaluation_run(parts, tmp_path: Path) -> None:
    from flawscope.bundle import Bundle
    from flawscope.evaluate.report import build_report
    from flawscope.evaluate.run import EvaluationRun, operating_point
    from flawscope.types import Prediction, Sample

    labels, scores = parts["labels"], parts["scores"]
    reject = float(np.sort(scores[labels == 0])[-2])
    thresholds = Thresholds.explicit(reject=reject)
    samples = [
        Sample(path=p, label=int(y), defect_type=t)
        for p, y, t in zip(parts["paths"], labels, parts["types"], strict=True)
    ]
    point = operating_point(scores, labels, thresholds)
    run = EvaluationRun(
        summary=parts["summary"], operating_point=point, samples=samples,
        prediction=Prediction(scores.astype(np.float32), tuple(parts["maps"])), masks=list(parts["masks"]),
        skipped=[], predict_seconds=1.0, bundle_version="cafe.t1", model_hash="cafe" * 16,
    )  # fmt: skip
    from flawscope.data.preprocess import Preprocessing
    from flawscope.manifest import BackboneSection, Manifest, ModelSection

    manifest = Manifest(ModelSection("padim"), BackboneSection("resnet18"), Preprocessing(), "cafe" * 16)
    out = build_report(run, Bundle(tmp_path, manifest), "synthetic", tmp_path / "report.html")
    twin = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert twin["model"] == {"name": "padim", "backbone": "resnet18", "bundle_version": "cafe.t1",
                             "model_hash": "cafe" * 16}  # fmt: skip
    # The report's operating point agrees with the evaluation run's.
    assert twin["headline"]["frr"] == pytest.approx(point.frr)
    assert twin["headline"]["recall"] == pytest.approx(point.recall)
    assert twin["headline"]["frr_upper_bound"] == pytest.approx(point.frr_upper_bound)
    assert twin["operating_point"]["recall_ci"] == pytest.approx(list(point.recall_ci))

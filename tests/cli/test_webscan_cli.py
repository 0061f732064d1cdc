"""``flawscope web-scan``: simulate a web, cut good frames, train, run a roll with defects and a gap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.cli.conftest import run_cli


@pytest.fixture(scope="module")
def web_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("webscan")
    simulate = ("web-scan", "simulate", "good.tif", "--length", "9", "--width", "128", "--seed", "50")
    done = run_cli(*simulate, cwd=root)
    assert done.rc == 0, done.text
    done = run_cli("web-scan", "frames", "webstrip://good.tif?frame=64&overlap=8", "-o", "goodweb", cwd=root)
    assert (
        done.rc == 0 and "wrote 161 frames"
    )  # 160 every 56 rows, and the last one flush with the end in done.out, done.text
    steps = [
        ("train", "goodweb", "-o", "bundle", "--image-size", "64", "--holdout", "0.4"),
        ("calibrate", "bundle", "--holdout-of", "goodweb", "--target-frr", "0.02"),
        ("export", "bundle", "-o", "deploy"),
    ]
    for step in steps:
        done = run_cli(*step, cwd=root)
        assert done.rc == 0, done.text
    return root


def test_a_roll_is_scanned_each_defect_reported_once_near_its_true_place(web_bundle: Path) -> None:
    root = web_bundle
    done = run_cli(
        "web-scan", "simulate", "roll.tif", "--length", "6", "--width", "128", "--defects", "3",
        "--defect-mm", "8,14", "--seed", "7", cwd=root,
    )  # fmt: skip
    assert done.rc == 0, done.text
    done = run_cli(
        "web-scan", "run", "deploy", "--source", "webstrip://roll.tif?frame=64&overlap=8&roll=R7",
        "--audit", "sqlite:///audit.db", "--json", "scan.json", "--map", "map.png", cwd=root,
    )  # fmt: skip
    assert done.rc == 0, done.text
    assert "roll R7" in done.out and "length yield" in done.out
    scan = json.loads((root / "scan.json").read_text())
    truth = json.loads((root / "roll.truth.json").read_text())["defects"]
    for true in truth:
        near = [
            d
            for d in scan["defects"]
            if abs(d["along_m"] - true["along_m"]) * 1000 <= 5
            and abs(d["across_mm"] - true["across_mm"]) <= 5
        ]
        assert len(near) == 1, (true, scan["defects"])
    assert scan["summary"]["length_m"] == pytest.approx(6.0) and scan["summary"]["not_inspected_m"] == 0
    assert (root / "map.png").stat().st_size > 1000
    done = run_cli("audit", "verify", "--audit", "sqlite:///audit.db", cwd=root)
    assert done.rc == 0, done.text


def test_rows_lost_by_the_source_are_not_inspected_in_the_summary(web_bundle: Path) -> None:
    uri = "websim://?length=2&width=128&seed=9&frame=64&overlap=8&drop=500:30,1200:5&roll=S9"
    args = ("run", "deploy", "--source", uri, "--audit", "sqlite:///gap.db", "--json", "gap.json", "--quiet")
    done = run_cli("web-scan", *args, cwd=web_bundle)
    assert done.rc == 0, done.text
    scan = json.loads((web_bundle / "gap.json").read_text())
    assert [(s["row0"], s["row1"]) for s in scan["not_inspected"]] == [(500, 530), (1200, 1205)]
    assert scan["summary"]["not_inspected_m"] == pytest.approx(0.035)
    assert scan["summary"]["rows_missing"] == 35 and scan["summary"]["gaps"] == 2


def test_a_margin_leaves_the_edges_out_and_says_so(web_bundle: Path) -> None:
    uri = "websim://?length=1&width=128&seed=9&frame=64&overlap=8&roll=M9"
    args = ("run", "deploy", "--source", uri, "--audit", "sqlite:///margin.db", "--json", "margin.json")
    done = run_cli("web-scan", *args, "--margin-mm", "4", "--quiet", cwd=web_bundle)
    assert done.rc == 0, done.text
    assert "inspected width" in done.out and "120.0 of 128 mm" in done.out
    scan = json.loads((web_bundle / "margin.json").read_text())
    assert scan["summary"]["inspected_width_mm"] == pytest.approx(120.0)
    assert scan["summary"]["edge_not_inspected_mm"] == pytest.approx(8.0)
    assert {(b["from_mm"], b["to_mm"]) for b in scan["inspected_bands"]} == {(4.0, 124.0)}
    assert all(4.0 <= d["across_mm"] <= 124.0 for d in scan["defects"])


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("run", "deploy", "--source", "webstrip://roll.tif?frame=64&overlap=64"), ["overlap_rows"]),
        (("run", "deploy", "--source", "webstrip://missing.tif"), ["missing.tif", "not found"]),
        (("run", "deploy", "--source", "goodweb"), ["not a line-scan source"]),
        (("simulate", "x.png"), ["x.png", ".tif or .npy"]),
        (("run", "deploy", "--source", "webstrip://roll.tif", "--margin-mm", "-1"), ["--margin-mm", ">= 0"]),
    ],
)
def test_bad_input_is_one_error_line(web_bundle: Path, one_error, args, fragments) -> None:
    extra = ("--audit", "sqlite:///bad.db") if args[0] == "run" else ()
    one_error(run_cli("web-scan", *args, *extra, cwd=web_bundle), *fragments)

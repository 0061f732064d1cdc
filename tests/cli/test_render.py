"""The per-part line of ``flawscope inspect`` agrees with the verdict beside it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from flawscope.cli.render import part_line, share_of_threshold
from flawscope.types import Outcome


@pytest.mark.parametrize(
    ("ratio", "text"),
    [(0.5, "0.50"), (0.571, "0.57"), (0.998, "0.99"), (0.99999999, "0.99"), (1.0, "1.00"), (1.004, "1.00"),
     (1.006, "1.01"), (12.3456, "12.35")],
)  # fmt: skip
def test_a_pass_never_reads_as_the_threshold(ratio: float, text: str):
    assert share_of_threshold(ratio) == text


def test_a_part_line_shows_outcome_share_and_id_and_the_reason_of_an_unjudged_part():
    passed = SimpleNamespace(
        seq=7, outcome=Outcome.PASS, normalized_score=0.998, part_id="good/[b]01", reason="score 1 < 2"
    )
    line = part_line(passed)
    assert "pass" in line and "0.99" in line and "1.00" not in line
    assert "good/\\[b]01" in line  # ids are escaped, not read as Rich markup
    assert "score 1 < 2" not in line  # a judged part's reason is in its record, not the list
    error = SimpleNamespace(
        seq=8, outcome=Outcome.ERROR, normalized_score=float("nan"), part_id="p9", reason="cannot read p9.png"
    )
    line = part_line(error)
    assert " - " in line and "cannot read p9.png" in line


def test_a_stopped_part_shows_the_defect_the_model_names():
    failed = SimpleNamespace(
        seq=9, outcome=Outcome.FAIL, normalized_score=1.2, part_id="p1", reason="score", category="crack"
    )
    assert part_line(failed).endswith("[red]crack[/red]")
    passed = SimpleNamespace(
        seq=10, outcome=Outcome.PASS, normalized_score=0.2, part_id="p2", reason="score", category="good"
    )
    assert "good" not in part_line(passed)


def test_cross_validation_says_how_many_good_parts_set_each_folds_thresholds():
    from rich.console import Console

    from flawscope.cli.render import supervised_table

    result = {
        "image_auroc": 0.99,
        "calibrated": {
            "frr": 0.069,
            "recall": 0.98,
            "review_rate": 0.0,
            "n_calibration": [33, 35, 31],
            "frr_upper_bound": [0.0867, 0.0819, 0.0921],
        },
    }
    console = Console(width=200, record=True)
    console.print(supervised_table(result))
    text = console.export_text()
    assert "0.069 / 0.980" in text
    assert "31-35; each fold's FRR bound 8.2%-9.2%" in text
    result["calibrated"]["n_calibration"] = [35, 35, 35]
    result["calibrated"]["frr_upper_bound"] = [0.0819] * 3
    console.print(supervised_table(result))
    assert "35; each fold's FRR bound 8.2% " in console.export_text()

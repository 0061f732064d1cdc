"""Rich rendering shared by the commands: summary tables and skipped-file lists."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from flawscope.cli.common import console, err_console


def print_skipped(skipped: list[tuple[str, str]]) -> None:
    """List the unusable files at the end of a command's output: one line each, file and problem."""
    if skipped:
        err_console.print(f"[yellow]{len(skipped)} file(s) skipped:[/yellow]")
        for path, problem in skipped:
            # File names are text, not Rich markup ("scan [b].png"); a path is never wrapped.
            err_console.print(f"  {escape(path)}: {escape(problem)}", soft_wrap=True, highlight=False)


def kv_table(title: str) -> Table:
    """An empty two-column (item, value) summary table; long values wrap, never end in "…"."""
    table = Table(title=title)
    table.add_column("item")
    table.add_column("value", overflow="fold")
    return table


# Colours of the outcomes in the per-part list.
OUTCOME_STYLE = {"pass": "green", "review": "yellow", "fail": "red", "error": "magenta"}


def part_header() -> str:
    """The column names above the per-part list of ``flawscope inspect``."""
    return "[dim]   seq  outcome        score/reject  part[/dim]"


def share_of_threshold(ratio: float) -> str:
    """A score divided by the reject threshold, to two decimals.

    A part under the threshold never reads ``1.00`` (0.998 reads ``0.99``), so the number agrees
    with the outcome beside it; at or over the threshold it reads ``1.00`` or more anyway.
    """
    text = f"{ratio:.2f}"
    return "0.99" if ratio < 1.0 <= float(text) else text


def part_line(record: Any) -> str:
    """One recorded part, as ``flawscope inspect`` lists it (Rich markup; ids and reasons escaped).

    The score is shown as a share of the reject threshold (1.00 is the threshold); a stopped part
    (review, fail) shows its defect category when the model names one; a part that was not judged
    shows its reason instead.
    """
    outcome = record.outcome.value
    style = OUTCOME_STYLE.get(outcome, "magenta")
    ratio = record.normalized_score
    score = share_of_threshold(ratio) if isinstance(ratio, float) and math.isfinite(ratio) else "-"
    line = f"{record.seq:>6}  [{style}]{outcome:<13}[/{style}]  {score:>11}  {escape(record.part_id)}"
    category = getattr(record, "category", None)
    if outcome in ("review", "fail") and category:
        # What the operator looks for on a stopped part: the defect the model names.
        line += f"  [{style}]{escape(category)}[/{style}]"
    if outcome not in ("pass", "review", "fail") and record.reason:
        line += f"  [dim]{escape(record.reason)}[/dim]"
    return line


def _ms(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.1f} ms"


def line_summary_table(summary: Any, audit: str, images: Path | None, drift: str | None = None) -> Table:
    """The end-of-run summary of ``flawscope inspect``: counts, throughput, latencies, where records went."""
    table = kv_table(f"Line summary ({summary.stop_reason})")
    table.add_row("parts recorded", str(summary.recorded))
    for outcome, n in summary.counts.items():
        table.add_row(f"  {outcome}", str(n))
    table.add_row("dropped (recorded not_inspected)", str(summary.dropped))
    table.add_row("missed by the source", str(summary.missed))
    table.add_row("throughput", f"{summary.throughput:.1f} parts/s over {summary.elapsed_s:.1f} s")
    for name, lat in summary.stages.items():
        if lat.n:
            table.add_row(f"latency {name}", f"mean {_ms(lat.mean_ms)}, p99 {_ms(lat.p99_ms)}")
    table.add_row("audit trail", escape(audit))
    table.add_row("images stored in", escape(str(images)) if images is not None else "- (not kept)")
    if drift is not None:
        table.add_row("drift monitor", escape(drift))
    return table


def print_calibration(result: Any) -> None:
    """What a calibration achieved, with its bounds."""
    t = result.thresholds
    table = kv_table(f"Calibrated thresholds (version {t.version})")
    table.add_row("reject threshold", f"{t.reject:.4g}")
    table.add_row("review threshold", f"{t.review:.4g}" + ("" if t.has_review_band else " (no review band)"))
    table.add_row("calibration images (good)", str(result.n_good))
    table.add_row("false rejects on them", f"{result.n_false_rejects} ({result.empirical_frr:.2%})")
    table.add_row(
        "FRR upper bound (95%, Clopper-Pearson)",
        f"{result.frr_upper_bound:.2%} [{result.guarantee}: target {t.target_frr:.2%}]",
    )
    table.add_row("smallest target this set supports", f"{result.min_supported_frr:.2%}")
    if result.recall is not None and result.recall_ci is not None:
        table.add_row(
            "recall on defects",
            f"{result.recall:.2%} (95% CI {result.recall_ci[0]:.2%}-{result.recall_ci[1]:.2%})",
        )
    for warning in result.warnings:
        # Warnings quote file names, which must not be read as Rich markup ("[b]" in a name).
        table.add_row("[yellow]warning[/yellow]", escape(warning))
    console.print(table)


def metrics_table(run: Any, title: str) -> Table:
    """Image and pixel metrics of an evaluation run, overall and per defect type.

    Headers are two short lines and columns are separated by space, not rules, so the nine
    columns fit an 80-column terminal.
    """
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 0, 0, 1))
    table.add_column("set", overflow="fold")
    for column in (
        "n\ngood",
        "n\ndefect",
        "image\nAUROC",
        "pixel\nAUROC",
        "AU-PRO",
        "best\nF1",
        "recall\n@FRR≤1%",
        "FRR\nachieved",
    ):
        table.add_column(column, justify="right", no_wrap=True)

    def fmt(value: float | None, pct: bool = False) -> str:
        if value is None:
            return "-"
        return f"{value:.1%}" if pct else f"{value:.3f}"

    rows = [("all", run.summary.overall), *sorted(run.summary.per_type.items())]
    for name, m in rows:
        table.add_row(
            name,
            str(m.n_good),
            str(m.n_defect),
            fmt(m.image_auroc),
            fmt(m.pixel_auroc),
            fmt(m.au_pro),
            fmt(m.best_f1),
            fmt(m.recall_at_frr, True),
            fmt(m.achieved_frr, True),
        )
    return table


def operating_table(point: Any) -> Table:
    """What the bundle's active thresholds do on the test split, with their bounds."""
    t = point.thresholds
    table = kv_table(f"At the bundle's thresholds (version {t.version})")
    table.add_row("reject / review threshold", f"{t.reject:.4g} / {t.review:.4g}")
    table.add_row(
        "false-reject rate on good test parts",
        f"{point.frr:.2%} (95% upper bound {point.frr_upper_bound:.2%}, n={point.n_good})",
    )
    if point.recall is not None:
        lo, hi = point.recall_ci
        table.add_row(
            "recall on defective test parts",
            f"{point.recall:.2%} (95% CI {lo:.2%}-{hi:.2%}, n={point.n_defect})",
        )
    table.add_row("sent to review", f"{point.review_rate:.2%}")
    return table


def _span(values: list[Any], fmt: str) -> str:
    """``lo-hi`` of some numbers in a format, or the one value when they are all equal."""
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return lo if lo == hi else f"{lo}-{hi}"


def supervised_table(result: dict[str, Any], title: str = "Categories and segmentation") -> Table:
    """Image, category and segmentation metrics of a model trained on labels (evaluation or CV)."""
    table = kv_table(title)

    def add(label: str, value: Any, digits: int = 4) -> None:
        if value is not None:
            table.add_row(label, f"{value:.{digits}f}" if isinstance(value, float) else str(value))

    add("image AP", result.get("image_ap"))
    add("image AUROC", result.get("image_auroc"))
    add("recall at FRR <= 1%", result.get("recall_at_1pct_frr"), 3)
    add("pixel AUROC", result.get("pixel_auroc"))
    calibrated = result.get("calibrated")
    if calibrated:
        add(
            "at thresholds calibrated per fold: FRR / recall",
            f"{calibrated['frr']:.3f} / {calibrated['recall']:.3f}",
        )
        counts, bounds = calibrated.get("n_calibration"), calibrated.get("frr_upper_bound")
        if counts and bounds:
            # A fold's few validation good parts cannot show a 1% FRR: say so beside the FRR.
            add(
                "  calibrated on (good parts per fold)",
                f"{_span(counts, '{}')}; each fold's FRR bound {_span(bounds, '{:.1%}')} "
                "(a station calibrates on more)",
            )
    categories = result.get("categories") or result.get("category")
    if categories:
        add("category accuracy", categories.get("accuracy"))
        add("confidence ECE", categories.get("ece"), 3)
        for cls in categories["classes"]:
            p, r = categories["precision"].get(cls), categories["recall"].get(cls)
            add(
                f"  {cls}: precision / recall",
                f"{p if p is None else round(p, 3)} / {r if r is None else round(r, 3)}",
            )
    add("defect-type accuracy", result.get("defect_type_accuracy"))
    detection = result.get("detection") or {}
    if detection.get("map") is not None:
        add(f"detection mAP@{detection['iou']:g}", detection["map"], 3)
        for cls, ap in detection["ap"].items():
            add(f"  {cls}: AP@{detection['iou']:g}", "-" if ap is None else f"{ap:.3f}")
    segmentation = result.get("segmentation") or {}
    dice = segmentation.get("dice") or result.get("dice") or {}
    iou = segmentation.get("iou") or result.get("iou") or {}
    for cls, value in dice.items():
        add(f"Dice / IoU {cls}", f"{value if value is None else round(value, 3)} / "
            f"{iou.get(cls) if iou.get(cls) is None else round(iou[cls], 3)}")  # fmt: skip
    return table

"""HTML of the validation report: one static page, no script, no external resource.

Everything shown is read from the report's JSON content, so the page and its JSON twin cannot
disagree; pictures are inlined as ``data:image/png;base64`` URIs and every text is escaped.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import PurePath
from typing import Any

from flawscope.evaluate.gallery import HeatScale, Tile

_CSS = """
:root { --ink:#1d2733; --muted:#5b6775; --line:#d9dee4; --bg:#f5f7f9; --accent:#1f4e79;
  --ok:#e3f1e6; --ok-ink:#1e6b34; --bad:#fbe4e2; --bad-ink:#a3231a; --rev:#fdf0d8; --rev-ink:#8a5a00; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink); font:14px/1.45 "Segoe UI", "Helvetica Neue", Arial,
  "Liberation Sans", sans-serif; -webkit-print-color-adjust:exact; print-color-adjust:exact; }
main { max-width:1120px; margin:0 auto; padding:0 24px 40px; }
header.top { background:var(--accent); color:#fff; padding:22px 0 18px; }
header.top .inner { max-width:1120px; margin:0 auto; padding:0 24px; }
header.top h1 { margin:0; font-size:24px; font-weight:600; }
header.top p { margin:4px 0 0; opacity:.85; }
header.top p.flag { display:inline-block; margin-top:10px; padding:2px 10px; border-radius:3px; opacity:1;
  background:#fdf0d8; color:#8a5a00; font-weight:600; font-size:13px; }
section { background:#fff; border:1px solid var(--line); border-radius:6px; margin:18px 0;
  padding:16px 20px; }
h2 { font-size:17px; margin:0 0 10px; color:var(--accent); }
p.lead { color:var(--muted); margin:0 0 12px; }
table { border-collapse:collapse; width:100%; font-variant-numeric:tabular-nums; }
th, td { padding:6px 10px; border-bottom:1px solid var(--line); text-align:left; vertical-align:top; }
th { background:#eef1f4; font-weight:600; }
td.num, th.num { text-align:right; }
table.confusion { width:auto; min-width:520px; }
table.confusion td, table.confusion th.num { min-width:110px; }
tr.total td { font-weight:600; border-top:2px solid var(--ink); }
table.meta th { width:190px; background:none; color:var(--muted); font-weight:500; }
code, .mono { font-family:"DejaVu Sans Mono", Consolas, monospace; font-size:12.5px; word-break:break-all; }
h3 { font-size:13px; margin:16px 0 0; color:var(--muted); text-transform:uppercase; letter-spacing:.04em; }
.cards { display:grid; gap:12px; margin:8px 0 4px; }
.card { border:1px solid var(--line); border-radius:6px; padding:10px 14px; background:#fbfcfd; }
.card .label { color:var(--muted); font-size:12.5px; }
.card .value { font-size:26px; font-weight:600; margin-top:2px; }
.card .sub { color:var(--muted); font-size:12px; }
.notes { border-left:4px solid #e0a100; background:var(--rev); padding:10px 14px; border-radius:4px;
  margin:12px 0 0; }
.notes.info { border-color:var(--accent); background:#eaf1f8; }
.notes ul { margin:4px 0 0 18px; padding:0; }
td.ok { background:var(--ok); color:var(--ok-ink); } td.bad { background:var(--bad); color:var(--bad-ink); }
td.rev { background:var(--rev); color:var(--rev-ink); }
img.figure { display:block; max-width:100%; height:auto; margin:6px auto; }
.gallery { display:grid; grid-template-columns:repeat(4, 1fr); gap:12px; }
figure.tile { margin:0; border:1px solid var(--line); border-radius:6px; padding:6px; background:#fbfcfd;
  break-inside:avoid; }
figure.tile img { display:block; width:100%; height:auto; margin:0 auto; }
figure.tile .missing { height:120px; display:flex; align-items:center; justify-content:center;
  text-align:center; color:var(--bad-ink); background:var(--bad); font-size:12px; padding:8px; }
figcaption { font-size:12px; margin-top:6px; }
figcaption .name { font-weight:600; word-break:break-all; }
figcaption .problem { color:var(--bad-ink); }
.badge { display:inline-block; padding:0 6px; border-radius:3px; font-size:11px; font-weight:700;
  text-transform:uppercase; letter-spacing:.03em; }
.badge.pass { background:var(--ok); color:var(--ok-ink); }
.badge.fail { background:var(--bad); color:var(--bad-ink); }
.badge.review { background:var(--rev); color:var(--rev-ink); }
.legend { display:flex; align-items:center; gap:10px; font-size:12px; color:var(--muted); margin:0 0 12px;
  flex-wrap:wrap; }
.legend .bar { width:220px; height:12px; border:1px solid var(--line); }
.legend .swatch { display:inline-block; width:18px; height:0; border-top:2px solid; vertical-align:middle; }
table.signoff td { height:42px; }
footer { color:var(--muted); font-size:12px; text-align:center; margin-top:18px; }
@media print { body { background:#fff; } section { break-inside:avoid; border:none; padding:8px 0; }
  .gallery { grid-template-columns:repeat(4, 1fr); } }
@page { size:A4; margin:14mm; }
"""

_TITLES = {
    "false_rejects": "Worst false rejects",
    "missed_defects": "Missed defects",
    "segmentation": "Segmentation overlays",
}


def _num(value: Any, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _pct(value: Any, digits: int = 2) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}%"


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _header(content: Mapping[str, Any]) -> str:
    model = content["model"]
    name = model.get("name") or "model"
    warning = (
        ""
        if content["operating_point"]["calibrated"]
        else '<p class="flag">Operating point not calibrated: chosen on the test set (see notes)</p>'
    )
    return (
        f'<header class="top"><div class="inner"><h1>Validation report — {escape(str(name))}</h1>'
        f"<p>Dataset {escape(content['dataset'])} · {content['counts']['images']} test images "
        f"({content['counts']['good']} good, {content['counts']['defect']} defective) · "
        f"{escape(content['report']['created_at'])}</p>{warning}</div></header>"
    )


def _meta(content: Mapping[str, Any]) -> str:
    model = dict(content["model"])
    point = content["operating_point"]
    rows = [("Dataset", escape(content["dataset"]))]
    labels = {
        "name": "Model",
        "backbone": "Backbone",
        "bundle_version": "Bundle version",
        "model_hash": "Model hash",
    }
    for key, label in labels.items():
        value = model.pop(key, None)
        cell = "—" if value is None else escape(str(value))
        rows.append((label, f"<code>{cell}</code>" if key in ("model_hash", "bundle_version") else cell))
    rows += [(escape(str(key)), escape(str(value))) for key, value in model.items()]
    thresholds = f"reject {point['reject']:.6g}"
    if point["has_review_band"]:
        thresholds += f", review {point['review']:.6g}"
    thresholds += f" — {escape(point['source'])}"
    rows.append(("Operating point", thresholds))
    calibration = content["calibration"]
    if calibration:
        rows.append(
            (
                "Calibration",
                f"target FRR {_pct(calibration['target_frr'])}, {calibration['confidence']:.0%} upper "
                f"bound {_pct(calibration['frr_upper_bound'])} on {calibration['n_calibration']} held-out "
                "good images",
            )
        )
    rows.append(("Report date", escape(content["report"]["created_at"])))
    rows.append(("Generated by", escape(content["report"]["generator"])))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="meta">{body}</table>'


def _cards(content: Mapping[str, Any]) -> str:
    head = content["headline"]
    point = content["operating_point"]
    ci = point["recall_ci"]
    cards = [
        ("Image AUROC", _num(head["image_auroc"]), "ranking of defective above good parts"),
        ("Pixel AUROC", _num(head["pixel_auroc"]), "defect pixels vs. defect-free pixels"),
        ("AU-PRO (FPR ≤ 0.3)", _num(head["au_pro"]), "per-region overlap, normalised"),
        (
            "Recall at operating point",
            _pct(head["recall"], 1),
            f"95% CI {_pct(ci[0], 1)} – {_pct(ci[1], 1)}" if ci else "no defective parts",
        ),
        (
            "False-reject rate (good test parts)",
            _pct(head["frr"]),
            f"{head['false_rejects']} of {head['n_good']} good parts rejected",
        ),
        (
            "FRR one-sided 95% upper bound",
            _pct(head["frr_upper_bound"]),
            "Clopper-Pearson, on the good test parts",
        ),
    ]
    if point["has_review_band"]:
        cards.append(("Sent to review", _pct(point["review_rate"]), "share of all test parts"))

    def grid(items: Sequence[tuple[str, str, str]]) -> str:
        body = "".join(
            f'<div class="card"><div class="label">{escape(label)}</div><div class="value">{value}</div>'
            f'<div class="sub">{escape(sub)}</div></div>'
            for label, value, sub in items
        )
        return f'<div class="cards" style="grid-template-columns:repeat({len(items)}, 1fr)">{body}</div>'

    return (
        f"<h3>Detection quality</h3>{grid(cards[:3])}"
        f"<h3>At the operating point (reject threshold {point['reject']:.6g})</h3>{grid(cards[3:])}"
    )


def _notes(notes: Sequence[str], calibrated: bool) -> str:
    if not notes:
        return ""
    kind = "notes info" if calibrated else "notes"
    items = "".join(f"<li>{escape(n)}</li>" for n in notes)
    return f'<div class="{kind}"><strong>Notes</strong><ul>{items}</ul></div>'


def _confusion(point: Mapping[str, Any]) -> str:
    band = point["has_review_band"]
    columns = ["pass", "review", "fail"] if band else ["pass", "fail"]
    styles = {
        ("good", "pass"): "ok",
        ("good", "fail"): "bad",
        ("defect", "pass"): "bad",
        ("defect", "fail"): "ok",
    }
    head = "".join(f'<th class="num">{c.capitalize()}</th>' for c in columns)
    rows = []
    for truth, label in (("good", "Good part"), ("defect", "Defective part")):
        counts = point["counts"][truth]
        total = sum(counts.values())
        cells = "".join(
            f'<td class="num {styles.get((truth, c), "rev")}">{counts[c]}'
            f"<br><small>{_pct(counts[c] / total if total else None, 1)}</small></td>"
            for c in columns
        )
        rows.append(f'<tr><th>{label}</th>{cells}<td class="num">{total}</td></tr>')
    return (
        f'<table class="confusion"><tr><th>Truth \\ outcome</th>{head}<th class="num">Total</th></tr>'
        f"{''.join(rows)}</table>"
    )


def _categories(cat: Mapping[str, Any]) -> str:
    """Confusion matrix over categories, then per-class precision and recall."""
    classes = list(cat["classes"])
    head = "".join(f'<th class="num">{escape(c)}</th>' for c in classes)
    rows = []
    for i, truth in enumerate(classes):
        row = cat["confusion"][i]
        cells = "".join(
            f'<td class="num {"ok" if i == j else ("bad" if v else "")}">{v}</td>' for j, v in enumerate(row)
        )
        rows.append(f'<tr><th>{escape(truth)}</th>{cells}<td class="num">{sum(row)}</td></tr>')
    matrix = (
        f'<table class="confusion"><tr><th>True \\ predicted</th>{head}<th class="num">Total</th></tr>'
        f"{''.join(rows)}</table>"
    )
    per_class = "".join(
        f'<tr><td>{escape(c)}</td><td class="num">{_pct(cat["precision"].get(c), 1)}</td>'
        f'<td class="num">{_pct(cat["recall"].get(c), 1)}</td></tr>'
        for c in classes
    )
    table = (
        '<table><tr><th>Class</th><th class="num">Precision</th><th class="num">Recall</th></tr>'
        f"{per_class}</table>"
    )
    return matrix + table


def _overlaps(seg: Mapping[str, Any]) -> str:
    """Dice and IoU per defect class."""
    rows = "".join(
        f'<tr><td>{escape(c)}</td><td class="num">{_num(seg["dice"][c], 3)}</td>'
        f'<td class="num">{_num(seg["iou"][c], 3)}</td></tr>'
        for c in seg["dice"]
    )
    return f'<table><tr><th>Class</th><th class="num">Dice</th><th class="num">IoU</th></tr>{rows}</table>'


def _per_type(rows: Sequence[Mapping[str, Any]], band: bool) -> str:
    head = [
        "Defect type",
        "Parts",
        "Rejected",
        *(["Review"] if band else []),
        "Missed",
        "Recall at op. point",
        "Image AUROC",
        "Pixel AUROC",
        "AU-PRO",
    ]
    header = "".join(f'<th class="{"" if i == 0 else "num"}">{h}</th>' for i, h in enumerate(head))
    body = []
    for row in rows:
        cells = [
            str(row["count"]),
            str(row["fail"]),
            *([str(row["review"])] if band else []),
            str(row["missed"]),
            _pct(row["recall"], 1),
            _num(row["image_auroc"]),
            _num(row["pixel_auroc"]),
            _num(row["au_pro"]),
        ]
        css = ' class="total"' if row["defect_type"] == "all defect types" else ""
        tds = "".join(f'<td class="num">{c}</td>' for c in cells)
        body.append(f"<tr{css}><td>{escape(row['defect_type'])}</td>{tds}</tr>")
    return f'<table class="per-type"><tr>{header}</tr>{"".join(body)}</table>'


def _tile(tile: Tile) -> str:
    name = PurePath(tile.path).name
    alt = escape(f"{name}: score {tile.score:.4g}, {tile.defect_type}, {tile.outcome}")
    if tile.png is not None:
        picture = f'<img src="{_png_uri(tile.png)}" alt="{alt}">'
    else:
        picture = f'<div class="missing">{escape(tile.problem or "no image")}</div>'
    regions = len(tile.regions)
    lines = [
        f'<span class="name" title="{escape(tile.path)}">{escape(name)}</span>',
        f'score <strong>{tile.score:.4g}</strong> · <span class="badge {tile.outcome}">{tile.outcome}</span>',
        f"{escape(tile.defect_type)} · {regions} region{'s' if regions != 1 else ''}",
    ]
    if tile.problem and tile.png is not None:
        lines.append(f'<span class="problem">{escape(tile.problem)}</span>')
    return f'<figure class="tile">{picture}<figcaption>{"<br>".join(lines)}</figcaption></figure>'


def _legend(scale: HeatScale) -> str:
    colours = scale.colours()
    stops = ", ".join(
        f"rgb({r},{g},{b}) {100 * i / (len(colours) - 1):.0f}%" for i, (r, g, b) in enumerate(colours)
    )
    box = '<span class="swatch" style="border-color:#fff;outline:1px solid #999"></span>'
    contour = '<span class="swatch" style="border-color:#f0f"></span>'
    return (
        f'<div class="legend"><span>{scale.low:.4g}</span>'
        f'<span class="bar" style="background:linear-gradient(to right, {stops})"></span>'
        f"<span>{scale.high:.4g} ({escape(scale.label)}) and above</span>"
        f"<span>{box} region at or above the {escape(scale.label)}</span>"
        f"<span>{contour} ground-truth defect</span>"
        "</div>"
    )


def _gallery(name: str, gallery: Mapping[str, Any], tiles: Sequence[Tile], scale: HeatScale | None) -> str:
    total, shown = gallery["total"], len(tiles)
    if name == "segmentation":
        lead = (
            f"Shown: {shown} of {total} defective parts, one of each defect type in turn: the predicted "
            "defect probability (red from 0.5), the regions cut from it (white boxes) and the true mask's "
            "outline (magenta)."
        )
    elif name == "false_rejects":
        lead = (
            f"{total} good part{'s' if total != 1 else ''} rejected in total. Shown: the {shown} good parts "
            "with the highest scores, highest first (a pass or review badge means it was not rejected)."
        )
    else:
        lead = (
            f"{total} defective part{'s' if total != 1 else ''} passed in total. Shown: the {shown} "
            "defective parts with the lowest scores, lowest first (a fail or review badge means it was "
            "caught)."
        )
    if not tiles:
        body = "<p>No parts of this kind in the test set.</p>"
    else:
        body = f'<div class="gallery">{"".join(_tile(t) for t in tiles)}</div>'
    legend = _legend(scale) if scale is not None and tiles else ""
    return _section(name.replace("_", "-"), _TITLES[name], legend + body, lead)


def _section(section_id: str, title: str, body: str, lead: str = "") -> str:
    lead_html = f'<p class="lead">{lead}</p>' if lead else ""
    return f'<section id="{section_id}"><h2>{title}</h2>{lead_html}{body}</section>'


def render_html(
    content: Mapping[str, Any],
    figures: Mapping[str, bytes | None],
    tiles: Mapping[str, Sequence[Tile]],
    scale: HeatScale | None,
) -> str:
    """The report page.

    Args:
        content: the report's JSON content (see :func:`flawscope.evaluate.report.build_content`).
        figures: PNG bytes of ``"curves"`` and ``"histogram"`` (``None``: not drawable).
        tiles: gallery tiles by gallery name.
        scale: the heatmaps' colour scale (``None`` without anomaly maps).

    Returns:
        A complete HTML document.
    """
    point = content["operating_point"]
    curves = figures.get("curves")
    histogram = figures.get("histogram")
    curves_html = (
        f'<img class="figure" src="{_png_uri(curves)}" alt="ROC and precision-recall curves">'
        if curves
        else "<p>Curves need both good and defective test parts.</p>"
    )
    histogram_html = (
        f'<img class="figure" src="{_png_uri(histogram)}" alt="Score histograms">' if histogram else ""
    )
    band = point["has_review_band"]
    notes = _notes(content["notes"], point["calibrated"])
    outcome_text = (
        "Pass below the review threshold, review between the thresholds, fail at or above the reject "
        "threshold."
        if band
        else "Fail at or above the reject threshold, pass below it (no review band)."
    )
    sections = [
        _section("summary", "Summary", _meta(content) + _cards(content) + notes),
        _section("operating-point", "Outcomes at the operating point", _confusion(point), outcome_text),
        _section("curves", "ROC and precision-recall curves", curves_html),
        _section("scores", "Score distributions", histogram_html),
        _section(
            "per-type",
            "Per defect type",
            _per_type(content["per_type"], band),
            "Each defect type against all good test parts; recall at the operating point above.",
        ),
        *(
            [
                _section(
                    "categories",
                    "Categories",
                    _categories(content["categories"]),
                    f"Predicted category (highest class probability) against the true one, "
                    f"{content['categories']['n']} parts; expected calibration error of the "
                    f"confidences {_num(content['categories']['ece'], 3)}.",
                )
            ]
            if content.get("categories")
            else []
        ),
        *(
            [
                _section(
                    "segmentation-metrics",
                    "Segmentation: Dice and IoU",
                    _overlaps(content["segmentation"]),
                    f"Pixels with defect probability at least 0.5 against the masks, pooled over "
                    f"{content['segmentation']['n_images']} defective parts.",
                )
            ]
            if content.get("segmentation")
            else []
        ),
        *(
            _gallery(name, content["galleries"][name], tiles.get(name, ()), scale)
            for name in _TITLES
            if name in content["galleries"]
        ),
        '<section id="sign-off"><h2>Sign-off</h2><table class="signoff"><tr><th>Role</th><th>Name</th>'
        "<th>Signature</th><th>Date</th></tr>"
        + "".join(
            f"<tr><td>{r}</td><td></td><td></td><td></td></tr>"
            for r in ("Prepared by", "Reviewed by", "Approved by")
        )
        + "</table></section>",
    ]
    title = escape(f"Validation report — {content['model'].get('name') or 'model'} on {content['dataset']}")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>'
        f"<style>{_CSS}</style></head><body>{_header(content)}<main>{''.join(sections)}"
        f"<footer>{escape(content['report']['generator'])} · model hash "
        f"{escape(str(content['model'].get('model_hash', '—')))}</footer></main></body></html>\n"
    )

"""``flawscope retrain`` and ``flawscope model list|register|compare|promote|rollback``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from flawscope.cli.audit import DEFAULT_AUDIT
from flawscope.cli.common import console
from flawscope.cli.render import kv_table

model_app = typer.Typer(
    help="The station's model registry: versions, comparison, promotion, rollback.", no_args_is_help=True
)
REGISTRY = Path("models")
STATION = "station-1"
RegistryOpt = Annotated[Path, typer.Option(help="The registry folder of the station's bundles.")]
AuditOpt = Annotated[str, typer.Option(help="SQLAlchemy URL of the audit database (the registry's history).")]
StationOpt = Annotated[str, typer.Option(help="The station the registry belongs to.")]
ByOpt = Annotated[str, typer.Option("--by", help="Who does it (recorded).")]


def _registry(registry: Path, audit: str, station: str, writable: bool = True) -> Any:
    from flawscope.audit import AuditLog
    from flawscope.improve.registry import ModelRegistry

    return ModelRegistry(registry, AuditLog.open(audit, read_only=not writable), station)


def retrain_command(
    bundle: Annotated[Path, typer.Argument(help="The base (live) bundle.")],
    feedback: Annotated[Path, typer.Option(help="Feedback dataset ('flawscope feedback export').")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Folder for the candidate (trained/ and deployed/).")
    ],
    data: Annotated[
        Path | None, typer.Option(help="The base model's training set, if not where its manifest says.")
    ] = None,
    target_frr: Annotated[
        float | None, typer.Option(help="Calibration target (default: the base thresholds').")
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            metavar="classify|segment|mixed",
            help="Learn from the feedback's labelled defects (default: the base model's own kind).",
        ),
    ] = None,
    station: Annotated[
        bool, typer.Option(help="With --task: a PaDiM head beside it sends unknown-looking parts to review.")
    ] = False,
    base_defects: Annotated[
        bool,
        typer.Option(
            help="With --task: also learn the labelled defects of the base set's test split (old types)."
        ),
    ] = True,
    seed: Annotated[
        int | None,
        typer.Option(help="The candidate's seed (default: the base model's); same seed, same model."),
    ] = None,
    ensemble: Annotated[
        int | None,
        typer.Option(help="With --task: heads of consecutive seeds averaged in the head (default 3)."),
    ] = None,
) -> None:
    """Retrain a candidate from the base model's training set plus the reviewed feedback, with lineage."""
    from flawscope.errors import InputError
    from flawscope.improve.retrain import retrain

    if station and task is None:
        raise InputError("--station", "adds an anomaly head to a model that learns from labels: give --task")
    if ensemble is not None and (task is None or ensemble < 1):
        raise InputError("--ensemble", "averages heads trained on labels: give --task and a number >= 1")
    params: dict[str, object] = {"anomaly": "padim"} if station else {}
    if seed is not None:
        params["seed"] = seed
    if ensemble is not None:
        params["ensemble"] = ensemble
    with console.status("retraining (fit, calibrate, export)"):
        result = retrain(
            bundle, feedback, output, data=data, target_frr=target_frr, task=task, params=params or None,
            base_defects=base_defects,
        )  # fmt: skip
    lineage = result.lineage
    table = kv_table("Candidate")
    table.add_row("deployable bundle", escape(str(result.deployed)))
    table.add_row("base model", lineage.base_version)
    for source in lineage.data:
        labels = ", ".join(f"{k} {v}" for k, v in source.labels.items())
        table.add_row(f"{source.role} data", f"{escape(source.path)}: {source.n_images} images ({labels})")
    table.add_row("reviews behind the labels", str(len(lineage.reviews)))
    if lineage.new_classes:
        table.add_row("[yellow]new defect types[/yellow]", ", ".join(lineage.new_classes))
    left_out = dict(lineage.excluded)  # the feedback's own and the fit's: every file, in the lineage
    for where, why in list(left_out.items())[:5]:
        table.add_row("[yellow]left out[/yellow]", f"{escape(where)}: {escape(why)}")
    if len(left_out) > 5:
        table.add_row(
            "[yellow]left out[/yellow]", f"{len(left_out) - 5} more (the manifest's lineage lists each)"
        )
    c = result.calibration
    table.add_row(
        "calibration", f"reject {c.thresholds.reject:.4g}, FRR bound {c.frr_upper_bound:.2%} ({c.guarantee})"
    )
    if c.recall is not None:
        table.add_row("recall on feedback defects not fitted on", f"{c.recall:.1%} of {c.n_defect}")
    for note in lineage.notes:
        table.add_row("note", escape(note))
    console.print(table)


@model_app.command("list")
def list_command(
    registry: RegistryOpt = REGISTRY, audit: AuditOpt = DEFAULT_AUDIT, station: StationOpt = STATION
) -> None:
    """Registered versions, which is live, and the registry's history."""
    reg = _registry(registry, audit, station, writable=False)
    table = Table(title=f"Models of {station} ({escape(str(reg.root))})")
    for column in ("version", "model", "live", "base", "new types"):
        table.add_column(column)
    for v in reg.versions():
        table.add_row(
            v.version,
            v.model,
            "[green]LIVE[/green]" if v.live else "",
            "" if v.lineage is None else v.lineage.base_version,
            "" if v.lineage is None else ", ".join(v.lineage.new_classes),
        )
    console.print(table)
    history = Table(title="History (audit records of kind 'model')")
    for column in ("seq", "action", "version", "by", "details"):
        history.add_column(column)
    for e in reg.events():
        shown = {k: v for k, v in e.details.items() if v not in (None, "", [])}
        history.add_row(str(e.seq), e.action, e.version, escape(e.by), escape(str(shown))[:120])
    console.print(history)
    reg.audit.close()


@model_app.command("register")
def register_command(
    bundle: Annotated[Path, typer.Argument(help="Deployable bundle to add.")],
    by: ByOpt,
    note: Annotated[str, typer.Option(help="A note for the record.")] = "",
    registry: RegistryOpt = REGISTRY,
    audit: AuditOpt = DEFAULT_AUDIT,
    station: StationOpt = STATION,
    trusted_keys: Annotated[Path | None, typer.Option(help="Trust store for the bundle's signature.")] = None,
) -> None:
    """Copy a deployable bundle into the registry (signature checked) and record it."""
    reg = _registry(registry, audit, station)
    version = reg.register(bundle, by, note, trusted_keys=trusted_keys)
    reg.audit.close()
    console.print(f"registered {version.version} ({escape(str(version.path))})")


@model_app.command("compare")
def compare_command(
    candidate: Annotated[str, typer.Argument(help="Candidate version (registered).")],
    by: ByOpt,
    live: Annotated[str | None, typer.Option(help="Version to compare with (default: the live one).")] = None,
    data: Annotated[
        Path | None, typer.Option(help="Labelled dataset whose test split is judged too.")
    ] = None,
    archive: Annotated[
        Path | None, typer.Option(help="Folder of unreviewed part images (agreement).")
    ] = None,
    max_unlabelled: Annotated[int, typer.Option(help="Most unreviewed images judged.")] = 2000,
    gates: Annotated[Path | None, typer.Option(help="JSON file of gate settings.")] = None,
    registry: RegistryOpt = REGISTRY,
    audit: AuditOpt = DEFAULT_AUDIT,
    station: StationOpt = STATION,
) -> None:
    """Judge the reviewed (and labelled) parts with both models; intervals, gates, saved and audited."""
    from flawscope.errors import InputError
    from flawscope.improve.compare import (
        compare_models,
        labelled_from_dataset,
        labelled_from_reviews,
    )
    from flawscope.improve.gates import GateConfig

    reg = _registry(registry, audit, station)
    live = live or reg.live_version()
    if live is None:
        raise InputError("--live", "nothing is live yet: promote a first version or give --live")
    labelled = labelled_from_reviews(reg.audit.records())
    if data is not None:
        labelled += labelled_from_dataset(data)
    unlabelled: list[str] = []
    if archive is not None:
        from flawscope.reinspect.run import walk_archive

        known = {item.path for item in labelled}
        for key, image in walk_archive(archive.expanduser().absolute()):
            path = str(archive.expanduser().absolute() / key)
            if image and path not in known:
                unlabelled.append(path)
            if len(unlabelled) >= max_unlabelled:
                break
    config = GateConfig.from_file(gates) if gates else GateConfig()
    with console.status(
        f"judging {len(labelled)} labelled and {len(unlabelled)} unlabelled parts with both models"
    ):
        result = compare_models(reg.path_of(live), reg.path_of(candidate), labelled, unlabelled, config)
    saved = reg.save_comparison(candidate, result, by)
    reg.audit.close()
    print_comparison(result)
    console.print(f"saved: {escape(str(saved))}")
    if not result.passed:
        raise typer.Exit(1)


def print_comparison(result: Any) -> None:
    """The comparison as tables: both models' rates with intervals, then the gates."""
    if result.refused:
        console.print(f"[red]refused[/red]: {escape(result.refused)}")
        return
    table = Table(title=f"{result.candidate.version} (candidate) vs {result.live.version} (live)")
    for column in ("", "live", "candidate"):
        table.add_column(column)

    def show(rate: Any) -> str:
        return f"{rate.rate:.1%} [{rate.low:.1%}, {rate.high:.1%}] n={rate.n}" if rate.n else "-"

    table.add_row("recall, all labelled defects", show(result.live.recall), show(result.candidate.recall))
    for kind in sorted(set(result.live.recall_by_type) | set(result.candidate.recall_by_type)):
        live_rate = result.live.recall_by_type.get(kind)
        cand_rate = result.candidate.recall_by_type.get(kind)
        table.add_row(
            f"  recall on {kind}",
            show(live_rate) if live_rate else "-",
            show(cand_rate) if cand_rate else "-",
        )
    table.add_row(
        "false rejects on good parts (upper bound)",
        f"{result.live.frr.k}/{result.live.frr.n} (<= {result.live.frr.upper:.2%})",
        f"{result.candidate.frr.k}/{result.candidate.frr.n} (<= {result.candidate.frr.upper:.2%})",
    )
    if result.agreement is not None:
        table.add_row("agreement on unreviewed parts", show(result.agreement), "")
    console.print(table)
    if result.trained_on:
        console.print(
            f"left out: {result.trained_on} labelled part(s) a model was fitted on or retrained from "
            "the review of (not evidence about it)"
        )
    gates = Table(title="Gates", caption=escape(result.config.describe()))
    for column in ("gate", "holds", "detail"):
        gates.add_column(column)
    for gate in result.gates:
        gates.add_row(
            gate.name, "[green]yes[/green]" if gate.passed else "[red]NO[/red]", escape(gate.detail)
        )
    console.print(gates)


@model_app.command("promote")
def promote_command(
    version: Annotated[str, typer.Argument(help="The version to make live.")],
    by: ByOpt,
    reason: Annotated[str, typer.Option(help="Why (recorded).")],
    override: Annotated[
        bool,
        typer.Option(
            help="Promote although the gates did not hold (needs the engineer role: FLAWSCOPE_PASSWORD "
            "or FLAWSCOPE_TOKEN)."
        ),
    ] = False,
    registry: RegistryOpt = REGISTRY,
    audit: AuditOpt = DEFAULT_AUDIT,
    station: StationOpt = STATION,
) -> None:
    """Make a version live if its comparison with the live version passed the gates (every step audited)."""
    from flawscope.improve.registry import web_authoriser

    reg = _registry(registry, audit, station)
    authorise = None
    if override:
        authorise = web_authoriser(
            audit, os.environ.get("FLAWSCOPE_PASSWORD"), os.environ.get("FLAWSCOPE_TOKEN")
        )
    try:
        event = reg.promote(version, by, reason, override=override, authorise=authorise)
    finally:
        reg.audit.close()
    note = (
        f" [yellow](gates overridden: {escape(event.details['override'])})[/yellow]"
        if event.details.get("override")
        else ""
    )
    console.print(f"{event.version} is live (audit record {event.seq}){note}")


@model_app.command("rollback")
def rollback_command(
    by: ByOpt,
    reason: Annotated[str, typer.Option(help="Why (recorded).")],
    registry: RegistryOpt = REGISTRY,
    audit: AuditOpt = DEFAULT_AUDIT,
    station: StationOpt = STATION,
) -> None:
    """Make the previously live version live again (audited)."""
    reg = _registry(registry, audit, station)
    try:
        event = reg.rollback(by, reason)
    finally:
        reg.audit.close()
    console.print(f"{event.version} is live again (audit record {event.seq})")

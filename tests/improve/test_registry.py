"""Registry, comparison, gates, promotion, override and rollback: every step in the audit chain."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from flawscope.audit import AuditLog
from flawscope.bundle import read_bundle
from flawscope.errors import InputError
from flawscope.improve.compare import compare_models, labelled_from_dataset
from flawscope.improve.gates import GateConfig
from flawscope.improve.registry import ModelRegistry, PromotionRefusedError, web_authoriser


@pytest.fixture(scope="module")
def worse(plant, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deliberately worse candidate: same model and preprocessing, calibrated to stop 45% of good parts."""
    from flawscope.bundle import read_bundle
    from flawscope.decide.workflow import calibrate_bundle
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.train import train

    folder = tmp_path_factory.mktemp("worse")
    live = read_bundle(plant.live).manifest
    params = {"image_size": 64, "canvas": (live.preprocessing.height, live.preprocessing.width)}
    result = train(plant.dataset, folder / "trained", model="padim", holdout=0.4, params=params)
    calibrate_bundle(folder / "trained", result.holdout_images, target_frr=0.45, review_rate=0.2)
    return export_bundle(folder / "trained", folder / "deployed").path


def test_comparison_with_intervals_and_a_refused_preprocessing(plant, candidate, tmp_path: Path) -> None:
    from flawscope.decide.workflow import calibrate_bundle
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.train import train

    labelled = labelled_from_dataset(plant.later)
    result = compare_models(plant.live, candidate, labelled, unlabelled=[item.path for item in labelled[:10]])
    assert not result.refused and result.live is not None and result.candidate is not None
    assert set(result.candidate.recall_by_type) == {"crack", "scratch", "spot"}
    rate = result.candidate.recall
    # The candidate was fitted on the 5 reviewed good parts taken from this set: they are left out.
    assert result.trained_on == 5 and sum(result.labelled.values()) == len(labelled) - 5
    assert rate.n == 24 and rate.low <= rate.rate <= rate.high and result.candidate.frr.n == 20 - 5
    assert result.agreement is not None and result.agreement.n == 10
    names = [g.name for g in result.gates]
    assert "recall on crack" in names and "false rejects on good parts (paired)" in names
    json.dumps(result.to_dict())
    # Parts whose review the candidate was retrained from are left out of the evidence.
    lineage = read_bundle(candidate).manifest.lineage
    assert lineage is not None and lineage.reviews
    reviews = lineage.reviews[: len(labelled)]
    marked = [
        replace(item, origin="review", review_seq=seq) for item, seq in zip(labelled, reviews, strict=False)
    ]
    fair = compare_models(plant.live, candidate, [*marked, *labelled[len(marked) :]])
    fitted = {i.path for i in labelled} - set(result.candidate.stopped)  # the 5 above
    expected = len(marked) + sum(1 for i in labelled[len(marked) :] if i.path in fitted)
    assert fair.trained_on == expected and sum(fair.labelled.values()) == len(labelled) - expected
    # A candidate made with another canvas is refused for part-by-part comparison, with the reason.
    other = train(plant.dataset, tmp_path / "t", model="padim", holdout=0.4, params={"image_size": 96})
    calibrate_bundle(tmp_path / "t", other.holdout_images, target_frr=0.05)
    refused = compare_models(plant.live, export_bundle(tmp_path / "t", tmp_path / "d").path, labelled)
    assert "different preprocessing" in refused.refused and "height" in refused.refused
    assert not refused.passed


def _engineer(url: str) -> None:
    from flawscope.web.database import WebDB
    from flawscope.web.users import create_user

    db = WebDB(url)
    try:
        create_user(db, "erin", "correct horse battery", "engineer", created_by="test")
        create_user(db, "olaf", "operator password 1", "operator", created_by="test")
    finally:
        db.close()


def test_promotion_is_gated_overrides_need_an_engineer_and_rollback_returns(
    plant, candidate, worse, tmp_path
) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    labelled = labelled_from_dataset(plant.later)
    gates = GateConfig(min_defects=10, min_good=10)
    with AuditLog.open(url) as audit:
        registry = ModelRegistry(tmp_path / "models", audit, "press-3")
        live = registry.register(plant.live, "ann", "first model").version
        cand = registry.register(candidate, "ann").version
        bad = registry.register(worse, "ann").version
        with pytest.raises(InputError, match="already registered"):
            registry.register(plant.live, "ann")
        registry.promote(live, "ann", "commissioning")  # nothing was live: no comparison needed
        assert registry.live_version() == live
        with pytest.raises(PromotionRefusedError, match="never compared"):
            registry.promote(cand, "ann", "better on cracks")
        # The worse candidate fails its gates and is refused; an operator cannot override.
        comparison = compare_models(registry.path_of(live), registry.path_of(bad), labelled, config=gates)
        assert not comparison.passed
        assert any(not g.passed and g.name.startswith("false rejects") for g in comparison.gates)
        registry.save_comparison(bad, comparison, "ann")
        with pytest.raises(PromotionRefusedError, match="failed the gate"):
            registry.promote(bad, "ann", "try")
        _engineer(url)
        with pytest.raises(PromotionRefusedError, match="not an engineer"):
            registry.promote(
                bad, "olaf", "try", override=True, authorise=web_authoriser(url, "operator password 1")
            )
        with pytest.raises(PromotionRefusedError, match="not an engineer"):
            registry.promote(bad, "erin", "try", override=True, authorise=web_authoriser(url, "wrong"))
        event = registry.promote(
            bad, "erin", "line trial", override=True, authorise=web_authoriser(url, "correct horse battery")
        )
        assert registry.live_version() == bad and "false rejects" in event.details["override"]
        rolled = registry.rollback("erin", "too many false rejects")
        assert rolled.version == live and registry.live_version() == live
        actions = [(e.action, e.version) for e in registry.events()]
        # The audit records keep the gates' settings and each paired test's result.
        compared = next(e for e in registry.events() if e.action == "compare" and e.version == bad)
        refused = next(e for e in registry.events() if e.action == "refuse" and e.version == bad)
        for event in (compared, refused):
            assert event.details["gate_config"]["type_rule"] == gates.type_rule
            recall = next(g for g in event.details["gates"] if g["name"] == "recall on all labelled defects")
            assert {"p_value", "low", "high", "margin", "rule", "live_only"} <= set(recall)
        assert audit.verify().ok
    assert actions[:4] == [("register", live), ("register", cand), ("register", bad), ("promote", live)]
    assert ("refuse", cand) in actions and ("compare", bad) in actions
    assert [a for a, v in actions if v == bad].count("refuse") == 3
    assert actions[-2:] == [("promote", bad), ("rollback", live)]


def test_cli_model_commands(plant, candidate, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flawscope.cli.app import app

    url = f"sqlite:///{tmp_path / 'audit.db'}"
    common = ["--registry", str(tmp_path / "models"), "--audit", url, "--station", "s"]
    runner = CliRunner()
    assert runner.invoke(app, ["model", "register", str(plant.live), "--by", "ann", *common]).exit_code == 0
    assert runner.invoke(app, ["model", "register", str(candidate), "--by", "ann", *common]).exit_code == 0
    with AuditLog.open(url) as audit:
        registry = ModelRegistry(tmp_path / "models", audit, "s")
        live, cand = [v.version for v in registry.versions()]
    result = runner.invoke(app, ["model", "promote", live, "--by", "ann", "--reason", "first", *common])
    assert result.exit_code == 0, result.output
    gates = tmp_path / "gates.json"
    gates.write_text(
        json.dumps(
            {
                "min_defects": 5,
                "min_good": 5,
                "recall_rule": "inferiority",
                "recall_margin": 0.99,
                "type_margin": 0.99,
                "frr_bound_tolerance": 1.0,
            }
        )
    )
    result = runner.invoke(
        app,
        ["model", "compare", cand, "--by", "ann", "--data", str(plant.later), "--gates", str(gates), *common],
    )
    assert result.exit_code == 0, result.output
    assert "recall on crack" in result.output and "Gates" in result.output
    result = runner.invoke(app, ["model", "promote", cand, "--by", "ann", "--reason", "gates hold", *common])
    assert result.exit_code == 0, result.output
    listing = runner.invoke(app, ["model", "list", *common])
    assert "LIVE" in listing.output and "crack" in listing.output and "promote" in listing.output

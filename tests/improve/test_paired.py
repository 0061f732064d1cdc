"""Paired recall gates on generated decisions: clear losses refused, noise passed, error rates as stated."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flawscope.errors import InputError
from flawscope.improve.compare import ModelResults, Rate
from flawscope.improve.gates import GateConfig, evaluate_gates
from flawscope.improve.paired import newcombe_interval, paired_test


def _results(version: str, stopped: dict[str, bool], labels: dict[str, str]) -> ModelResults:
    defects = [p for p, label in labels.items() if label != "good"]
    good = [p for p, label in labels.items() if label == "good"]
    by_type: dict[str, list[bool]] = {}
    for p in defects:
        by_type.setdefault(labels[p], []).append(stopped[p])
    return ModelResults(
        version,
        version,
        Rate.of(sum(stopped[p] for p in defects), len(defects), 0.95),
        {t: Rate.of(sum(v), len(v), 0.95) for t, v in by_type.items()},
        Rate.of(sum(stopped[p] for p in good), len(good), 0.95),
        stopped,
    )


def _plant(lost: int, gained: int, good_extra: int = 0) -> tuple[ModelResults, ModelResults, dict[str, str]]:
    """Live and candidate decisions on 95 good parts and 55 + 85 + 51 defects of three types.

    The live model catches 47 of 55 ``break`` parts; the candidate misses ``lost`` of those and
    catches ``gained`` of the 8 the live model missed. Both catch 76 of 85 ``blowhole``; the
    candidate catches 48 of 51 ``uneven`` (the new type), the live model 32. Both stop the same 8
    good parts, the candidate ``good_extra`` more.
    """
    labels: dict[str, str] = {}
    live: dict[str, bool] = {}
    cand: dict[str, bool] = {}
    for i in range(95):
        labels[f"g{i}"] = "good"
        live[f"g{i}"] = i < 8
        cand[f"g{i}"] = i < 8 + good_extra
    for i in range(55):
        labels[f"b{i}"] = "break"
        live[f"b{i}"] = i < 47
        cand[f"b{i}"] = (lost <= i < 47) or (47 <= i < 47 + gained)
    for i in range(85):
        labels[f"h{i}"] = "blowhole"
        live[f"h{i}"] = cand[f"h{i}"] = i < 76
    for i in range(51):
        labels[f"u{i}"] = "uneven"
        live[f"u{i}"] = i < 32
        cand[f"u{i}"] = i < 48
    return _results("live", live, labels), _results("cand", cand, labels), labels


def _gate(gates, name: str):
    return next(g for g in gates if g.name == name)


def test_a_candidate_that_loses_many_old_parts_is_refused_and_noise_is_not() -> None:
    config = GateConfig()
    live, cand, labels = _plant(lost=15, gained=0)
    gates = evaluate_gates(live, cand, None, config, labels)
    broken = _gate(gates, "recall on break")
    assert not broken.passed and broken.test is not None and broken.test.live_only == 15
    assert broken.test.p_value < 0.025 and broken.test.high < 0
    # It still catches more defects overall (new type), but the type it forgot refuses it.
    assert cand.recall.rate > live.recall.rate and not all(g.passed for g in gates)
    # Two parts lost and one gained of 55 (-1.8 points) is noise: every gate holds.
    live, cand, labels = _plant(lost=2, gained=1)
    gates = evaluate_gates(live, cand, None, config, labels)
    assert all(g.passed for g in gates), [g.detail for g in gates if not g.passed]
    # Six lost and one gained (-9.1 points, what the 5-point rule refused): not evidence of a loss
    # at 95% (p = 0.0625); a stricter plant asks for non-inferiority per type, which it cannot show.
    live, cand, labels = _plant(lost=6, gained=1)
    assert _gate(evaluate_gates(live, cand, None, config, labels), "recall on break").passed
    strict = GateConfig(type_rule="non_inferiority", type_margin=0.10)
    assert not _gate(evaluate_gates(live, cand, None, strict, labels), "recall on break").passed
    # More good parts stopped: the false-reject gate refuses it whatever its recall.
    live, cand, labels = _plant(lost=0, gained=8, good_extra=26)
    gates = evaluate_gates(live, cand, None, config, labels)
    assert not _gate(gates, "false rejects on good parts (paired)").passed
    assert _gate(gates, "recall on all labelled defects").passed


def test_the_paired_false_reject_rule() -> None:
    # One more good part stopped of 95 (2 by the candidate only, 1 by live only) moves the bound
    # over the live model's: the bound rule refuses it, the paired rule sees no evidence.
    live, cand, labels = _plant(lost=0, gained=0)
    cand.stopped["g8"] = cand.stopped["g9"] = True
    cand.stopped["g0"] = False
    cand = _results("cand", cand.stopped, labels)
    by_bound = evaluate_gates(live, cand, None, GateConfig(frr_rule="bound"), labels)
    assert not _gate(by_bound, "false-reject bound on good parts").passed
    paired = GateConfig()
    assert paired.frr_rule == "paired"  # the default
    gates = evaluate_gates(live, cand, None, paired, labels)
    frr = _gate(gates, "false rejects on good parts (paired)")
    assert frr.passed and frr.test is not None and "2 by the candidate only" in frr.detail
    assert not any(g.name == "false-reject bound on good parts" for g in gates)
    # 26 more good parts stopped is evidence: refused; an absolute cap still applies beside it.
    live, cand, labels = _plant(lost=0, gained=8, good_extra=26)
    assert not _gate(
        evaluate_gates(live, cand, None, paired, labels), "false rejects on good parts (paired)"
    ).passed
    capped = evaluate_gates(live, cand, None, GateConfig(frr_rule="paired", max_frr_bound=0.5), labels)
    assert _gate(capped, "false-reject bound on good parts").passed
    with pytest.raises(InputError, match="frr_rule"):
        GateConfig(frr_rule="sometimes")


def test_false_reject_rules_on_equally_good_and_worse_candidates() -> None:
    """Why ``paired`` is the default: ``bound`` refuses an equally good candidate a third of the time."""
    from flawscope.decide.calibration import clopper_pearson_upper

    rng = np.random.default_rng(11)
    n, live_k, runs = 95, 8, 2000

    def refusals(p_drop: float, p_add: float) -> tuple[float, float]:
        # The live model stops parts 0-7; the candidate drops each with p_drop and stops each
        # other good part with p_add (equally good when 8 * p_drop == 87 * p_add).
        dropped = (rng.random((runs, live_k)) < p_drop).sum(axis=1)
        added = (rng.random((runs, n - live_k)) < p_add).sum(axis=1)
        bound = paired = 0
        for live_only, cand_only in zip(dropped, added, strict=True):
            cand_k = live_k - int(live_only) + int(cand_only)
            bound += bool(clopper_pearson_upper(cand_k, n) > clopper_pearson_upper(live_k, n) + 1e-12)
            test = paired_test(live_k - int(live_only), int(cand_only), int(live_only), n, margin=0.0,
                               rule="inferiority")  # fmt: skip
            paired += not test.passed
        return bound / runs, paired / runs

    bound, paired = refusals(0.3, 0.3 * 8 / 87)  # equally good: 2.4 parts discordant each way
    assert bound > 0.25 and paired <= 0.025, (bound, paired)  # 0.36 and 0.002 with this seed
    bound, paired = refusals(0.1, 0.1)  # stops about twice as many good parts (8.7 more, 0.8 fewer)
    assert paired >= 0.6 and bound >= paired, (bound, paired)  # paired 0.70 with this seed
    bound, paired = refusals(0.1, 0.2)  # three times as many
    assert paired >= 0.95, (bound, paired)


def test_the_overall_gate_needs_non_inferiority_shown() -> None:
    # 5 points is the margin on all defects: losing 15 break parts while gaining 16 uneven is
    # +0.5 points overall, but the interval reaches below -5 points, so it is not shown.
    live, cand, labels = _plant(lost=15, gained=0)
    overall = _gate(evaluate_gates(live, cand, None, GateConfig(), labels), "recall on all labelled defects")
    assert overall.test is not None and overall.test.method == "score"
    assert overall.passed == (overall.test.low > -0.05)
    live, cand, labels = _plant(lost=0, gained=4)
    overall = _gate(evaluate_gates(live, cand, None, GateConfig(), labels), "recall on all labelled defects")
    assert overall.passed and overall.test is not None and overall.test.low > -0.05


def test_error_rates_on_generated_pairs() -> None:
    """McNemar's exact one-sided test refuses an equally good candidate at most 2.5% of the time."""
    rng = np.random.default_rng(7)
    n, runs = 55, 4000
    # Equally good: each part is discordant with probability 0.15, either way alike.
    u = rng.random((runs, n))
    live_only = (u < 0.075).sum(axis=1)
    cand_only = ((u >= 0.075) & (u < 0.15)).sum(axis=1)
    refused = sum(
        not paired_test(0, int(b), int(c), n, margin=0.0, rule="inferiority").passed
        for b, c in zip(live_only, cand_only, strict=True)
    )
    assert refused / runs <= 0.025
    # A candidate that misses a quarter of what the live model caught: refused almost always.
    u = rng.random((400, n))
    live_only = (u < 0.25).sum(axis=1)
    cand_only = ((u >= 0.25) & (u < 0.27)).sum(axis=1)
    refused = sum(
        not paired_test(0, int(b), int(c), n, margin=0.0, rule="inferiority").passed
        for b, c in zip(live_only, cand_only, strict=True)
    )
    assert refused / 400 >= 0.9  # 95% with this seed


def test_newcombe_interval_covers_the_true_difference() -> None:
    rng = np.random.default_rng(3)
    n, runs, covered = 55, 2000, 0
    # Cells: both, live only, candidate only, neither; true difference -0.10.
    probs = [0.70, 0.15, 0.05, 0.10]
    for cells in rng.multinomial(n, probs, size=runs):
        low, high = newcombe_interval(int(cells[0]), int(cells[1]), int(cells[2]), n, 0.95)
        covered += low <= -0.10 <= high
    assert covered / runs >= 0.93
    low, high = newcombe_interval(40, 0, 0, 55, 0.95)
    assert low < 0 < high  # no discordant part is not a proof of equality


def test_gate_settings_are_checked_and_named() -> None:
    with pytest.raises(InputError, match="recall_rule"):
        GateConfig(recall_rule="maybe")
    with pytest.raises(InputError, match="type_margin"):
        GateConfig(type_margin=5)
    assert "non-inferiority within 5%" in GateConfig().describe()


def test_old_gate_files_get_a_clear_error(tmp_path) -> None:
    path = tmp_path / "gates.json"
    path.write_text(json.dumps({"max_type_recall_drop": 0.05}))
    with pytest.raises(InputError, match="replaced by the paired tests"):
        GateConfig.from_file(path)
    path.write_text(json.dumps({"type_rule": "sometimes"}))
    with pytest.raises(InputError, match="type_rule"):
        GateConfig.from_file(path)
    path.write_text(json.dumps({"type_rule": "non_inferiority", "type_margin": 0.1, "confidence": 0.9}))
    config = GateConfig.from_file(path)
    assert config.type_margin == 0.1 and config.confidence == 0.9

"""The promotion gates: when a candidate may replace the live model, and each gate's verdict.

:class:`GateConfig` holds the settings (read from a JSON file of its fields) and :class:`Gate`
one gate's verdict with the paired test behind it; :func:`evaluate_gates` judges them on both
models' results (:func:`flawscope.improve.compare.compare_models` gathers those).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from flawscope.declaration import GOOD
from flawscope.errors import InputError
from flawscope.improve.paired import METHODS, RULES, PairedTest, paired_test

if TYPE_CHECKING:
    from flawscope.improve.compare import ModelResults, Rate

FRR_RULES = ("bound", "paired")


@dataclass(frozen=True)
class GateConfig:
    """When a candidate may replace the live model.

    Attributes:
        min_defects: labelled defective parts needed to judge recall at all.
        min_good: labelled good parts needed to judge the false-reject rate.
        recall_rule: the paired test on all labelled defects: ``non_inferiority`` (the candidate
            must show it is worse by less than ``recall_margin``) or ``inferiority`` (refused
            when the data show it is worse by more), see :mod:`flawscope.improve.paired`.
        recall_margin: the loss in recall on all labelled defects the rule tolerates (a share).
        type_rule: the paired test of each defect type with at least ``min_type_parts`` parts.
        type_margin: its margin (0 with ``inferiority``: McNemar's exact test).
        method: ``auto`` (the exact binomial test for a zero margin, the paired interval
            otherwise), ``exact`` or ``score``.
        min_type_parts: parts a type needs for its own gate.
        frr_rule: ``paired`` (the default: refused on evidence that it stops more good parts
            than the live model by over ``frr_margin``: the recall gates' paired test on the
            good parts, McNemar's exact one-sided test for a zero margin) or ``bound`` (the
            candidate's FRR upper bound not above the live model's). Both models are calibrated
            to the same promise, so on the same good parts an equally good candidate's count
            lands above the live model's about as often as below: ``bound`` refuses such a
            candidate in about a third of comparisons (tested on generated pairs), ``paired`` in
            at most 2.5%.
        frr_margin: the paired rule's margin (a share).
        frr_bound_tolerance: the candidate's FRR upper bound may exceed the live model's by at most this.
        max_frr_bound: an absolute cap on the candidate's FRR upper bound (None: none).
        min_agreement: least share of unlabelled parts judged alike (None: not a gate).
        confidence: confidence of every interval and bound (each one-sided test at half the rest).
    """

    min_defects: int = 10
    min_good: int = 30
    recall_rule: str = "non_inferiority"
    recall_margin: float = 0.05
    type_rule: str = "inferiority"
    type_margin: float = 0.0
    method: str = "auto"
    min_type_parts: int = 5
    frr_rule: str = "paired"
    frr_margin: float = 0.0
    frr_bound_tolerance: float = 0.0
    max_frr_bound: float | None = None
    min_agreement: float | None = None
    confidence: float = 0.95

    def __post_init__(self) -> None:
        for name in ("recall_rule", "type_rule"):
            if getattr(self, name) not in RULES:
                raise InputError(name, f"must be one of {', '.join(RULES)}, got {getattr(self, name)!r}")
        if self.method not in METHODS:
            raise InputError("method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.frr_rule not in FRR_RULES:
            raise InputError("frr_rule", f"must be one of {', '.join(FRR_RULES)}, got {self.frr_rule!r}")
        for name in ("recall_margin", "type_margin", "frr_margin"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value < 1.0:
                raise InputError(name, f"must be a share in [0, 1) (0.05 = 5 points), got {value!r}")
        if not isinstance(self.confidence, int | float) or not 0.5 <= self.confidence < 1.0:
            raise InputError("confidence", f"must be in [0.5, 1), got {self.confidence!r}")

    def describe(self) -> str:
        """The recall gates' rules in one line, for the report."""

        def rule(name: str, margin: float) -> str:
            if name == "non_inferiority":
                return f"non-inferiority within {margin:.0%} (the candidate must show it)"
            return (
                f"refused on evidence of a loss over {margin:.0%}"
                if margin
                else "refused on evidence of a loss"
            )

        return (
            f"paired tests at {self.confidence:.0%} confidence (method {self.method}): all defects "
            f"{rule(self.recall_rule, self.recall_margin)}; each type with >= {self.min_type_parts} parts "
            f"{rule(self.type_rule, self.type_margin)}; "
            + (
                f"false rejects {rule('inferiority', self.frr_margin)} (paired, on good parts)"
                if self.frr_rule == "paired"
                else "false-reject bound at most live's"
                + (f" + {self.frr_bound_tolerance:.1%}" if self.frr_bound_tolerance else "")
            )
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> GateConfig:
        """Gates from a JSON file of these fields (any subset).

        Raises:
            InputError: naming the file or field.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(path, f"cannot read the gates ({exc})") from None
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known if isinstance(data, dict) else set()
        if not isinstance(data, dict) or unknown:
            replaced = sorted(unknown & {"max_recall_drop", "max_type_recall_drop"})
            hint = (
                f" ({', '.join(replaced)}: replaced by the paired tests' recall_margin and type_margin)"
                if replaced
                else ""
            )
            raise InputError(path, f"unknown gate(s) {sorted(unknown)}{hint}; known: {sorted(known)}")
        try:
            return replace(cls(), **data)
        except InputError as exc:
            raise InputError(path, str(exc)) from None


@dataclass(frozen=True)
class Gate:
    """One gate's verdict.

    Attributes:
        name: which gate.
        passed: whether it holds.
        detail: the numbers behind it.
        test: the paired test behind a recall gate (None for the others).
    """

    name: str
    passed: bool
    detail: str
    test: PairedTest | None = None


def paired_counts(
    live: dict[str, bool], candidate: dict[str, bool], paths: Iterable[str]
) -> tuple[int, int, int, int]:
    """``(both, live_only, candidate_only, n)``: parts each model stopped, among ``paths`` both judged."""
    judged = [p for p in paths if p in live and p in candidate]
    both = sum(1 for p in judged if live[p] and candidate[p])
    live_only = sum(1 for p in judged if live[p] and not candidate[p])
    candidate_only = sum(1 for p in judged if candidate[p] and not live[p])
    return both, live_only, candidate_only, len(judged)


def evaluate_gates(
    live: ModelResults,
    candidate: ModelResults,
    agreement: Rate | None,
    config: GateConfig,
    labels: dict[str, str] | None = None,
) -> tuple[Gate, ...]:
    """Each gate's verdict (see :class:`GateConfig`).

    Args:
        live: the live model's results (with ``stopped``).
        candidate: the candidate's, on the same parts.
        agreement: agreement on unlabelled parts.
        config: the gates.
        labels: image path -> label of the labelled parts (the recall gates' pairs).
    """
    labels = labels or {}
    defects = [p for p, label in labels.items() if label != GOOD]
    counts = paired_counts(live.stopped, candidate.stopped, defects)
    test = paired_test(
        *counts, margin=config.recall_margin, rule=config.recall_rule, confidence=config.confidence,
        method=config.method,
    )  # fmt: skip
    gates = [
        Gate(
            "enough labelled parts",
            candidate.recall.n >= config.min_defects and candidate.frr.n >= config.min_good,
            f"{candidate.recall.n} defective (need {config.min_defects}), "
            f"{candidate.frr.n} good (need {config.min_good})",
        ),
        Gate(
            "recall on all labelled defects",
            test.passed,
            f"candidate {candidate.recall.rate:.1%} vs live {live.recall.rate:.1%}: {test.describe()}"
            if candidate.recall.n
            else "no labelled defect to judge (none given, or every one was fitted on)",
            test,
        ),
    ]
    for kind, rate in candidate.recall_by_type.items():
        before = live.recall_by_type.get(kind)
        if before is None or rate.n < config.min_type_parts:
            continue
        counts = paired_counts(live.stopped, candidate.stopped, [p for p in defects if labels[p] == kind])
        test = paired_test(
            *counts, margin=config.type_margin, rule=config.type_rule, confidence=config.confidence,
            method=config.method,
        )  # fmt: skip
        gates.append(
            Gate(
                f"recall on {kind}",
                test.passed,
                f"candidate {rate.rate:.1%} vs live {before.rate:.1%}: {test.describe()}",
                test,
            )
        )
    good_pairs = paired_counts(
        live.stopped, candidate.stopped, [p for p, label in labels.items() if label == GOOD]
    )
    if config.frr_rule == "paired":
        # Stopping a good part is the loss here: the candidate "loses" the good parts only it stops.
        both, live_only, cand_only, n = good_pairs
        test = paired_test(
            both, cand_only, live_only, n, margin=config.frr_margin, rule="inferiority",
            confidence=config.confidence, method=config.method,
        )  # fmt: skip
        gates.append(
            Gate(
                "false rejects on good parts (paired)",
                test.passed,
                f"candidate {candidate.frr.k}/{candidate.frr.n} vs live {live.frr.k}/{live.frr.n}: "
                + test.describe("false-reject rate, live minus candidate,", swapped=True),
                test,
            )
        )
    bound = live.frr.upper + config.frr_bound_tolerance if config.frr_rule == "bound" else math.inf
    if config.max_frr_bound is not None:
        bound = min(bound, config.max_frr_bound)
    if math.isfinite(bound):
        gates.append(
            Gate(
                "false-reject bound on good parts",
                candidate.frr.upper <= bound + 1e-12,
                f"candidate {candidate.frr.k}/{candidate.frr.n} stopped, upper bound "
                f"{candidate.frr.upper:.2%} vs allowed {bound:.2%} "
                f"(live {live.frr.k}/{live.frr.n}, bound {live.frr.upper:.2%}); "
                f"{good_pairs[1]} stopped by live only, {good_pairs[2]} by the candidate only",
            )
        )
    if config.min_agreement is not None:
        ok = agreement is not None and agreement.rate >= config.min_agreement
        shown = "no unlabelled parts" if agreement is None else f"{agreement.rate:.1%} of {agreement.n}"
        gates.append(Gate("agreement on unlabelled parts", ok, f"{shown}; need {config.min_agreement:.1%}"))
    return tuple(gates)

"""Shadow evaluation on the line: the candidate judges every part and never changes a verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from flawscope.errors import InputError


def test_shadow_records_the_candidate_and_leaves_the_line_alone(plant, candidate, tmp_path: Path) -> None:
    from flawscope.acquire import SimSource
    from flawscope.audit import AuditLog
    from flawscope.improve.shadow import ShadowObserver, shadow_agreement
    from flawscope.line import run_line
    from flawscope.reinspect.store import ResultStore
    from flawscope.runtime import Inspector

    live, cand = Inspector.load(plant.live), Inspector.load(candidate)
    url = f"sqlite:///{tmp_path / 'audit.db'}"

    def run(observer: object, audit_url: str) -> list:
        # An explicit prefix gives both runs the same part ids (without one they are unique per run).
        with AuditLog.open(audit_url) as audit:
            run_line(
                SimSource(plant.later, rate=0, count=60, defect_ratio=0.3, seed=3, prefix="part"),
                live,
                audit,
                station="s",
                monitor=observer,
            )
            return list(audit.records())

    with ResultStore.open(url) as store:
        shadow = ShadowObserver(live, cand, store, "s")
        records = run(shadow, url)
        rows = list(store.results(shadow.scope))
    plain = run(None, f"sqlite:///{tmp_path / 'plain.db'}")
    assert shadow.parts == 60 and len(rows) == 60
    # The live verdicts are those of a line without a shadow (scores to float rounding: the line's
    # batches form as parts arrive, and ONNX Runtime's sums differ in the last bits between sizes).
    assert [(r.part_id, r.outcome) for r in records] == [(r.part_id, r.outcome) for r in plain]
    assert [r.score for r in records] == pytest.approx([r.score for r in plain], rel=1e-5)
    agreement = shadow_agreement(records, rows)
    assert agreement.n == 60 and 0 <= agreement.low <= agreement.rate <= agreement.high <= 1
    # The running counts of the line's summary agree with the stored rows.
    assert agreement.k == shadow.same and shadow.same + shadow.stopped_more + shadow.passed_more == 60
    assert f"the same decision on {shadow.same} " in shadow.describe()


def test_a_candidate_with_another_preprocessing_is_refused_for_shadow(plant, tmp_path: Path) -> None:
    from flawscope.decide.workflow import calibrate_bundle
    from flawscope.export.onnx_export import export_bundle
    from flawscope.improve.shadow import ShadowObserver
    from flawscope.models.train import train
    from flawscope.reinspect.store import ResultStore
    from flawscope.runtime import Inspector

    other = train(
        plant.dataset,
        tmp_path / "t",
        model="padim",
        holdout=0.4,
        params={"image_size": 64, "resize_mode": "stretch"},
    )
    calibrate_bundle(tmp_path / "t", other.holdout_images, target_frr=0.05)
    stretched = Inspector.load(export_bundle(tmp_path / "t", tmp_path / "d").path)
    with ResultStore.open(f"sqlite:///{tmp_path / 'a.db'}") as store, pytest.raises(InputError, match="mode"):
        ShadowObserver(Inspector.load(plant.live), stretched, store, "s")

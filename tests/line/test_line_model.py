"""The line with a real (tiny) exported model on a simulated line: one integration test."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from flawscope.acquire import open_source
from flawscope.audit import AuditLog
from flawscope.types import Outcome


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny PaDiM trained on synthetic parts, with explicit thresholds, exported to ONNX."""
    try:
        from flawscope.bundle import update_manifest
        from flawscope.data.synthetic import SyntheticSpec, write_dataset
        from flawscope.decide.thresholds import ThresholdHistory, Thresholds
        from flawscope.export.onnx_export import export_bundle
        from flawscope.models.train import train
        from flawscope.runtime.inspector import Inspector
    except ImportError as exc:
        pytest.skip(f"training/export/runtime pieces missing: {exc}")
    root = tmp_path_factory.mktemp("model")
    dataset = write_dataset(
        root / "data", SyntheticSpec(size=(64, 64), n_train=12, n_test_good=4, n_test_defect_per_type=1)
    )
    train(dataset, root / "bundle", model="padim", params={"image_size": 64})
    deployed = export_bundle(root / "bundle", root / "deploy")
    # Reject just above the highest training score: a threshold on the model's own scale.
    probe = Inspector.load(root / "deploy")
    scores = [
        probe.score_many([f.image]).scores[0] for f in open_source(Path(dataset.root) / "train" / "good")
    ]
    # Two versions: 2 (the latest) is the one the line uses unless 1 is pinned.
    loose = dataclasses.replace(Thresholds.explicit(reject=float(np.max(scores)) * 100), version=1)
    thresholds = dataclasses.replace(Thresholds.explicit(reject=float(np.max(scores)) * 1.05), version=2)
    update_manifest(deployed, thresholds=ThresholdHistory((loose, thresholds)))
    return Path(dataset.root), root / "deploy"


def test_line_with_a_real_exported_model(tmp_path: Path, deployed: tuple[Path, Path]) -> None:
    from flawscope.line import run_line
    from flawscope.runtime.inspector import Inspector

    dataset, bundle = deployed
    inspector = Inspector.load(bundle, threads=1)
    with AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}") as audit:
        source = open_source(f"sim://{dataset}?rate=0&count=40&defect_ratio=0.5&seed=1")
        summary = run_line(
            source, inspector, audit, station="line-1", store_images=tmp_path / "img", batch_size=8
        )
        records = list(audit.records())
        assert audit.verify().ok
    assert summary.recorded == len(records) == 40
    assert len({r.part_id for r in records}) == 40
    assert {r.outcome for r in records} <= {Outcome.PASS, Outcome.REVIEW, Outcome.FAIL}
    assert all(r.model_hash == inspector.model_hash and r.threshold_version == 2 for r in records)
    assert all(np.isfinite(r.score) and Path(r.image_uri).is_file() for r in records)
    assert summary.counts["fail"] > 0  # defects at a ratio of one half are found

    # Parts that go to review or fail keep the map the inspector judged them on.
    from flawscope.line.store import read_map

    judged = [r for r in records if r.outcome in (Outcome.REVIEW, Outcome.FAIL)]
    assert judged, "the simulated line gave no review or fail part"
    for record in records:
        amap = read_map(record.image_uri)
        assert (amap is not None) == (record in judged)
        if amap is not None:
            # Divided by the reject threshold, so its peak is the record's normalized score.
            assert abs(float(amap.max()) - record.normalized_score) < 0.01 * record.normalized_score + 1e-3


def test_records_name_the_thresholds_and_graph_that_judged_even_when_an_older_version_is_pinned(
    tmp_path: Path, deployed: tuple[Path, Path]
) -> None:
    from flawscope.bundle import read_bundle
    from flawscope.line import run_line
    from flawscope.runtime.inspector import Inspector

    dataset, bundle = deployed
    manifest = read_bundle(bundle).manifest
    graph_sha256 = manifest.files["model.onnx"]
    for pinned in (None, 1, 2):
        inspector = Inspector.load(bundle, threads=1, threshold_version=pinned)
        used = manifest.thresholds.get(pinned or 2)
        with AuditLog.open(f"sqlite:///{tmp_path / f'audit-{pinned}.db'}") as audit:
            source = open_source(f"sim://{dataset}?rate=0&count=6&defect_ratio=0.5&seed=2")
            run_line(source, inspector, audit, station="line-1", batch_size=3)
            records = list(audit.records())
        assert len(records) == 6
        for record in records:
            assert record.model_version == f"{manifest.model_hash[:12]}.t{used.version}"
            assert record.threshold_version == used.version
            assert record.threshold_sha256 == used.sha256 and record.graph_sha256 == graph_sha256
            # Judged by the pinned version's values, not only labelled with its number.
            assert record.normalized_score == pytest.approx(record.score / used.reject, rel=1e-6)
    assert manifest.thresholds.get(1).sha256 != manifest.thresholds.get(2).sha256

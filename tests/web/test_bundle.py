"""``POST /api/v1/inspect`` with a real (tiny) exported model loaded from ``--bundle``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tests.web.conftest import Served, Station, add_users, serve

from flawscope.audit import AuditLog


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny PaDiM trained on synthetic parts, exported, with a review band below the reject threshold."""
    try:
        from flawscope.acquire import open_source
        from flawscope.bundle import update_manifest
        from flawscope.data.synthetic import SyntheticSpec, write_dataset
        from flawscope.decide.thresholds import Thresholds
        from flawscope.export.onnx_export import export_bundle
        from flawscope.models.train import train
        from flawscope.runtime.inspector import Inspector
    except ImportError as exc:
        pytest.skip(f"training/export/runtime pieces missing: {exc}")
    root = tmp_path_factory.mktemp("model")
    spec = SyntheticSpec(size=(64, 64), n_train=12, n_test_good=4, n_test_defect_per_type=1)
    dataset = write_dataset(root / "data", spec)
    train(dataset, root / "bundle", model="padim", params={"image_size": 64})
    deploy = export_bundle(root / "bundle", root / "deploy")
    probe = Inspector.load(root / "deploy")
    scores = [
        probe.score_many([f.image]).scores[0] for f in open_source(Path(dataset.root) / "train" / "good")
    ]
    top = float(np.max(scores))
    thresholds = dataclasses.replace(Thresholds.explicit(reject=top * 1.05, review=top * 0.95), version=1)
    update_manifest(deploy, thresholds=[thresholds.to_dict()])
    return Path(dataset.root), root / "deploy"


@pytest.fixture
def with_bundle(tmp_path: Path, deployed: tuple[Path, Path]) -> Iterator[Served]:
    station = Station(f"sqlite:///{tmp_path / 'audit.db'}", tmp_path / "images", tmp_path)
    station.images.mkdir()
    AuditLog.open(station.url).close()
    add_users(station.url)
    yield from serve(station, bundle=deployed[1], station="lab")


def test_uploads_are_inspected_by_the_loaded_bundle(with_bundle: Served, deployed: tuple[Path, Path]) -> None:
    dataset, _ = deployed
    defects = sorted(p for p in (dataset / "test").rglob("*.png") if p.parent.name != "good")
    goods = sorted((dataset / "test" / "good").glob("*.png"))
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in [*goods[:2], *defects[:3]]]
    with with_bundle.client("alice") as api:
        verdicts = api.post("/api/v1/inspect/batch", files=files)
        assert verdicts.status_code == 200, verdicts.text
        results = verdicts.json()
        assert [r["error"] for r in results] == [None] * 5
        assert all(r["outcome"] in ("pass", "review", "fail") for r in results)
        assert any(r["outcome"] == "fail" for r in results[2:]), results
        for result in results:
            record = api.get(f"/api/v1/inspections/{result['seq']}").json()
            assert record["station"] == "lab" and record["threshold_version"] == 1 and record["has_image"]
            assert record["normalized_score"] == pytest.approx(result["normalized_score"])
            heat = api.get(f"/parts/{result['seq']}/heat.png")
            # Maps are kept for the parts that go to review or fail, as on the line.
            assert heat.status_code == (200 if result["outcome"] in ("review", "fail") else 404)
        settings = with_bundle.client("erin").get("/settings")
        assert "Thresholds of the loaded model" in settings.text
    snapshot = with_bundle.app.state.web.feed.snapshot()  # type: ignore[attr-defined]
    assert snapshot["trend"]["review"] == pytest.approx(0.95 / 1.05)

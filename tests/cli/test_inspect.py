"""``flawscope inspect`` and ``flawscope audit`` without silent traps.

A dataset's ``test/`` folder (one subfolder per kind of part) is inspected whole; a run that
inspects nothing fails; every part is listed as it is recorded and the output says where the
records and images went; simulator part ids never repeat across runs; a refused command creates
no database or folder.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest


def _records(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return [
            (str(p), str(o)) for p, o in conn.execute("select part_id, outcome from inspections order by seq")
        ]


def test_a_folder_of_subfolders_is_inspected_whole_and_listed_live(cli, trained, tmp_path: Path):
    test = trained.data / "test"
    n_images = len(list(test.rglob("*.png")))
    db, images = tmp_path / "audit.db", tmp_path / "images"
    run = cli(
        "inspect", trained.deploy, "--source", test, "--audit", f"sqlite:///{db}",
        "--store-images", images, cwd=tmp_path, columns=80,
    )  # fmt: skip
    assert run.rc == 0, run.text
    records = _records(db)
    assert len(records) == n_images == 16
    assert {part.split("/")[0] for part, _ in records} == {
        "good", "crack", "contamination", "missing", "scratch", "spot"
    }  # fmt: skip
    # One line per part as it is recorded, with its outcome and id.
    for part, outcome in records:
        assert any(part in line and outcome in line for line in run.out.splitlines()), part
    # Where the records and images went, said at the start and in the summary.
    assert f"records: sqlite:///{db}" in run.out
    assert f"images: {images}" in run.out
    assert "nan" not in run.out
    assert "audit head 16:" in run.out


def test_show_rejects_lists_only_what_did_not_pass(cli, trained, tmp_path: Path):
    db = tmp_path / "audit.db"
    run = cli(
        "inspect", trained.deploy, "--source", trained.data / "test", "--audit", f"sqlite:///{db}",
        "--show", "rejects", cwd=tmp_path,
    )  # fmt: skip
    assert run.rc == 0, run.text
    records = _records(db)
    for part, outcome in records:
        listed = any(line.endswith(f"  {part}") for line in run.out.splitlines())
        assert listed == (outcome != "pass"), (part, outcome)


def test_a_folder_without_recursion_refuses_and_says_how(cli, one_error, trained, tmp_path: Path):
    db = tmp_path / "audit.db"
    source = f"folder://{trained.data / 'test'}?recursive=0"
    run = cli("inspect", trained.deploy, "--source", source, "--audit", f"sqlite:///{db}", cwd=tmp_path)
    one_error(run, "no images directly in this folder", "16 in its subfolders", "recursive=1")
    assert not db.exists()


def test_an_empty_folder_refuses(cli, one_error, trained, tmp_path: Path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    db = tmp_path / "audit.db"
    run = cli("inspect", trained.deploy, "--source", empty, "--audit", f"sqlite:///{db}", cwd=tmp_path)
    one_error(run, str(empty), "no images found")
    assert not db.exists()


def test_a_run_that_inspects_nothing_is_not_a_success(cli, one_error, trained, tmp_path: Path):
    watched = tmp_path / "incoming"
    watched.mkdir()
    db = tmp_path / "audit.db"
    run = cli(
        "inspect", trained.deploy, "--source", f"watch://{watched}?idle=0.5", "--audit", f"sqlite:///{db}",
        cwd=tmp_path,
    )  # fmt: skip
    one_error(run, "no part was inspected")
    assert "nan" not in run.out


def test_simulator_part_ids_are_unique_across_runs(cli, trained, tmp_path: Path):
    db = tmp_path / "audit.db"
    source = f"sim://{trained.data}?rate=0&count=4&defect_ratio=0.5&seed=1"
    for _ in range(2):
        run = cli("inspect", trained.deploy, "--source", source, "--audit", f"sqlite:///{db}", cwd=tmp_path)
        assert run.rc == 0, run.text
    ids = [part for part, _ in _records(db)]
    assert len(ids) == 8 and len(set(ids)) == 8, ids
    assert all(part.startswith("sim-") for part in ids)
    # An explicit prefix is the user's own numbering, used as given.
    source = f"sim://{trained.data}?rate=0&count=2&defect_ratio=0&prefix=lot7"
    run = cli("inspect", trained.deploy, "--source", source, "--audit", f"sqlite:///{db}", cwd=tmp_path)
    assert run.rc == 0, run.text
    assert [part for part, _ in _records(db)][-2:] == ["lot7-000000", "lot7-000001"]


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        (["--batch-size", "0"], ["batch_size", "must be a whole number >= 1"]),
        (["--queue-size", "0"], ["queue_size"]),
        (["--station", " "], ["station"]),
    ],
)
def test_bad_settings_are_refused_before_anything_is_created(
    cli, one_error, trained, tmp_path: Path, options: list[str], fragments: list[str]
):
    db, images = tmp_path / "audit.db", tmp_path / "images"
    run = cli(
        "inspect", trained.deploy, "--source", trained.data / "test", "--audit", f"sqlite:///{db}",
        "--store-images", images, *options, cwd=tmp_path,
    )  # fmt: skip
    one_error(run, *fragments)
    assert not db.exists() and not images.exists()


def test_a_missing_source_creates_no_database(cli, one_error, trained, tmp_path: Path):
    db = tmp_path / "audit.db"
    run = cli(
        "inspect", trained.deploy, "--source", tmp_path / "nope", "--audit", f"sqlite:///{db}", cwd=tmp_path
    )
    one_error(run, "does not exist")
    assert not db.exists()


@pytest.mark.parametrize("command", [["verify"], ["export", "-o", "records.csv"]])
def test_reading_a_missing_audit_database_creates_nothing(cli, one_error, tmp_path: Path, command: list[str]):
    db = tmp_path / "never.db"
    run = cli("audit", *command, "--audit", f"sqlite:///{db}", cwd=tmp_path)
    one_error(run, str(db), "no audit database")
    assert list(tmp_path.iterdir()) == []


def test_export_writes_acquisition_times_in_iso_8601(cli, trained, tmp_path: Path):
    import csv
    from datetime import datetime

    db = tmp_path / "audit.db"
    source = f"sim://{trained.data}?rate=0&count=3"
    assert (
        cli("inspect", trained.deploy, "--source", source, "--audit", f"sqlite:///{db}", cwd=tmp_path).rc == 0
    )
    run = cli("audit", "export", "--audit", f"sqlite:///{db}", "-o", tmp_path / "r.csv", cwd=tmp_path)
    assert run.rc == 0, run.text
    with (tmp_path / "r.csv").open(newline="") as handle:
        times = [row["acquired_at"] for row in csv.DictReader(handle)]
    assert len(times) == 3
    for text in times:
        stamp = datetime.fromisoformat(text)
        assert stamp.tzinfo is not None and abs(stamp.timestamp() - datetime.now().timestamp()) < 600

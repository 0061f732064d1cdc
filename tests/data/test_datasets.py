from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from flawscope.data.datasets import Dataset, list_images, load_dataset, read_image_folder, read_samples
from flawscope.errors import InputError
from flawscope.types import Sample

SHARED = Path(
    os.environ.get("FLAWSCOPE_SHARED_DATASETS", Path(__file__).resolve().parents[3] / "shared" / "datasets")
)


def _names(samples: tuple[Sample, ...] | list[Sample]) -> list[str]:
    return [Path(s.path).name for s in samples]


# ---------------------------------------------------------------- MVTec AD layout


@pytest.fixture
def mvtec(tmp_path: Path, write_image) -> Path:
    root = tmp_path / "widget"
    for name in ("b.png", "a.png", "c.jpg"):
        write_image(root / "train" / "good" / name)
    (root / "train" / "good" / "notes.txt").write_text("not an image")
    (root / "train" / "good" / ".hidden.png").write_bytes(b"junk")
    write_image(root / "test" / "good" / "g1.bmp")
    write_image(root / "test" / "scratch" / "s1.png")
    write_image(root / "test" / "scratch" / "s2.png")
    write_image(root / "test" / "dent" / "d1.png")
    write_image(root / "ground_truth" / "scratch" / "s1_mask.png")
    write_image(root / "ground_truth" / "scratch" / "s2.png")  # the MVTec-variant name
    return root


def test_mvtec_layout_labels_types_and_masks(mvtec: Path) -> None:
    dataset = load_dataset(mvtec)
    assert isinstance(dataset, Dataset)
    assert dataset.layout == "mvtec"
    assert dataset.name == "widget"
    assert Path(dataset.root) == mvtec.resolve()
    assert _names(dataset.train) == ["a.png", "b.png", "c.jpg"]  # sorted, hidden and .txt ignored
    assert all(s.label == 0 and s.defect_type == "good" and s.mask_path is None for s in dataset.train)
    by_name = {Path(s.path).name: s for s in dataset.test}
    assert set(by_name) == {"g1.bmp", "s1.png", "s2.png", "d1.png"}
    assert by_name["g1.bmp"].label == 0
    assert (by_name["s1.png"].label, by_name["s1.png"].defect_type) == (1, "scratch")
    assert Path(by_name["s1.png"].mask_path or "").name == "s1_mask.png"
    assert Path(by_name["s2.png"].mask_path or "").name == "s2.png"
    assert by_name["d1.png"].label == 1 and by_name["d1.png"].mask_path is None
    assert dataset.defect_types == ["dent", "scratch"]
    assert len(dataset.test_good) == 1 and len(dataset.test_defect) == 3
    assert all(Path(s.path).is_absolute() for s in dataset.train + dataset.test)


def test_loading_is_deterministic(mvtec: Path) -> None:
    assert load_dataset(mvtec) == load_dataset(str(mvtec))


def test_mvtec_without_test_folder_has_empty_test(tmp_path: Path, write_image) -> None:
    write_image(tmp_path / "set" / "train" / "good" / "x.png")
    dataset = load_dataset(tmp_path / "set")
    assert len(dataset.train) == 1 and dataset.test == () and dataset.defect_types == []


# ---------------------------------------------------------------- plain layout


def test_plain_layout_holds_out_every_fifth_good(tmp_path: Path, write_image) -> None:
    root = tmp_path / "line3"
    for i in range(10):
        write_image(root / "OK" / f"{i:02d}.png")
    write_image(root / "ng" / "n1.png")
    write_image(root / "ng" / "n2.png")
    write_image(root / "porosity" / "p1.png")
    write_image(root / "masks" / "n1_mask.png")
    write_image(root / "masks" / "porosity" / "p1.png")
    dataset = load_dataset(root)
    assert dataset.layout == "plain"
    assert _names(dataset.train) == [
        "00.png",
        "01.png",
        "02.png",
        "03.png",
        "05.png",
        "06.png",
        "07.png",
        "08.png",
    ]
    assert _names(dataset.test_good) == ["04.png", "09.png"]
    assert dataset.defect_types == ["ng", "porosity"]
    masks = {Path(s.path).name: s.mask_path for s in dataset.test_defect}
    assert Path(masks["n1.png"] or "").name == "n1_mask.png"
    assert masks["n2.png"] is None
    assert Path(masks["p1.png"] or "").parent.name == "porosity"
    # No sample is in both splits.
    assert not {s.path for s in dataset.train} & {s.path for s in dataset.test}


def test_plain_good_only_and_flat_folder_are_all_training(tmp_path: Path, write_image) -> None:
    for i in range(7):
        write_image(tmp_path / "a" / "normal" / f"{i}.png")
        write_image(tmp_path / "b" / f"{i}.tif")
    for folder in ("a", "b"):
        dataset = load_dataset(tmp_path / folder)
        assert (dataset.layout, len(dataset.train), dataset.test) == ("plain", 7, ())


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.write_text("x"), "is a file"),
        (lambda root: root.mkdir(), "not a dataset: expected train/good/"),
        (
            lambda root: (root / "docs").mkdir(parents=True) or (root / "docs" / "a.txt").write_text("x"),
            "not a dataset",
        ),
        (lambda root: (root / "train" / "good").mkdir(parents=True), "training folder has no images"),
        (lambda root: (root / "train" / "bad").mkdir(parents=True), "needs a train/good/ folder"),
        (lambda root: (root / "good").mkdir(parents=True), "good-parts folder has no images"),
    ],
    ids=["missing", "file", "empty-dir", "no-images", "empty-train-good", "train-without-good", "empty-good"],
)
def test_bad_dataset_paths_raise_one_clear_error(tmp_path: Path, build, expected: str) -> None:
    root = tmp_path / "data"
    build(root)
    with pytest.raises(InputError) as info:
        load_dataset(root)
    message = str(info.value)
    assert expected in message
    assert str(root.name) in info.value.where
    assert "\n" not in message


def test_list_images(tmp_path: Path, write_image) -> None:
    write_image(tmp_path / "cal" / "b.jpeg")
    write_image(tmp_path / "cal" / "a.png")
    write_image(tmp_path / "cal" / "sub" / "c.png")
    (tmp_path / "cal" / ".x.png").write_bytes(b"")
    assert [Path(p).name for p in list_images(tmp_path / "cal")] == ["a.png", "b.jpeg"]
    with pytest.raises(InputError, match="does not exist"):
        list_images(tmp_path / "nope")
    with pytest.raises(InputError, match="is a file"):
        list_images(tmp_path / "cal" / "a.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images found"):
        list_images(tmp_path / "empty")


# ---------------------------------------------------------------- reading samples


def test_read_samples_skips_bad_files_and_lists_them(tmp_path: Path, write_image) -> None:
    good = write_image(tmp_path / "good.png", shape=(32, 40))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(np.random.default_rng(1).bytes(500))
    defect = write_image(tmp_path / "defect.png", shape=(32, 40, 3))
    mask = write_image(
        tmp_path / "defect_mask.png", image=np.pad(np.full((4, 4), 255, np.uint8), ((10, 18), (10, 26)))
    )
    bad_mask_img = write_image(tmp_path / "other.png", shape=(32, 40))
    small_mask = write_image(tmp_path / "other_mask.png", shape=(20, 20))
    unmasked = write_image(tmp_path / "unmasked.png", shape=(32, 40))
    samples = [
        Sample(str(good), 0),
        Sample(str(corrupt), 0),
        Sample(str(defect), 1, "scratch", str(mask)),
        Sample(str(bad_mask_img), 1, "scratch", str(small_mask)),
        Sample(str(unmasked), 1, "dent", None),
    ]
    loaded = read_samples(samples)
    images, masks, skipped = loaded
    assert [Path(s.path).name for s in loaded.samples] == ["good.png", "defect.png", "unmasked.png"]
    assert len(images) == len(masks) == len(loaded) == 3
    assert images[1].shape == (32, 40, 3) and images[1].dtype == np.uint8
    assert masks[0] is not None and masks[0].shape == (32, 40) and not masks[0].any()
    assert masks[1] is not None and masks[1].dtype == bool and int(masks[1].sum()) == 16
    assert masks[2] is None
    assert [Path(p).name for p, _ in skipped] == ["corrupt.png", "other_mask.png"]
    assert "not a readable image" in skipped[0][1]
    assert "20x20" in skipped[1][1] and "40x32" in skipped[1][1]

    with pytest.raises(InputError, match=r"corrupt\.png"):
        read_samples(samples, on_error="raise")
    no_masks = read_samples(samples, masks=False)
    assert len(no_masks) == 4 and all(m is None for m in no_masks.masks)


# ---------------------------------------------------------------- the real shared datasets


def _manifest(root: Path) -> set[tuple[str, str, str, str]]:
    with open(root / "manifest.csv", newline="") as handle:
        return {(r["path"], r["split"], r["defect_type"], r["mask_path"]) for r in csv.DictReader(handle)}


def _as_rows(dataset: Dataset) -> set[tuple[str, str, str, str]]:
    root = Path(dataset.root)
    rows = set()
    for split, samples in (("train", dataset.train), ("test", dataset.test)):
        for s in samples:
            mask = Path(s.mask_path).relative_to(root).as_posix() if s.mask_path else ""
            rows.add((Path(s.path).relative_to(root).as_posix(), split, s.defect_type, mask))
    return rows


def _real(name: str) -> Path:
    root = SHARED / name
    if not (root / "manifest.csv").is_file():
        pytest.skip(
            f"real dataset {name!r} not found at {root} (set FLAWSCOPE_SHARED_DATASETS to its parent)"
        )
    return root


def test_read_image_folder_reads_good_images_and_lists_bad_files(tmp_path: Path, write_image) -> None:
    write_image(tmp_path / "a.png", shape=(32, 40))
    write_image(tmp_path / "b.bmp", shape=(16, 16, 3))
    (tmp_path / "c.png").write_bytes(b"not a png")
    loaded = read_image_folder(tmp_path)
    assert _names(loaded.samples) == ["a.png", "b.bmp"]
    assert all(s.label == 0 for s in loaded.samples) and loaded.masks == [None, None]
    assert [Path(p).name for p, _ in loaded.skipped] == ["c.png"]
    with pytest.raises(InputError, match="missing"):
        read_image_folder(tmp_path / "missing")


@pytest.mark.slow
def test_magnetic_tile_matches_its_manifest() -> None:
    root = _real("magnetic_tile")
    dataset = load_dataset(root)
    assert dataset.layout == "mvtec"
    assert len(dataset.train) == 761
    counts = Counter(s.defect_type for s in dataset.test)
    assert counts.pop("good") == 191
    assert counts == {"blowhole": 115, "break": 85, "crack": 57, "fray": 32, "uneven": 103}
    assert sum(counts.values()) == 392
    assert all(s.mask_path for s in dataset.test_defect)
    assert _as_rows(dataset) == _manifest(root)


@pytest.mark.slow
def test_kolektorsdd_matches_its_manifest_and_reads() -> None:
    root = _real("kolektorsdd")
    dataset = load_dataset(root)
    assert (len(dataset.train), len(dataset.test_good), len(dataset.test_defect)) == (223, 110, 50)
    assert dataset.defect_types == ["defect"]
    assert _as_rows(dataset) == _manifest(root)
    # A few images and masks decode, with masks at the image's size and some defect pixels.
    loaded = read_samples(dataset.test_defect[:3] + dataset.train[:2])
    assert loaded.skipped == []
    for image, mask in zip(loaded.images, loaded.masks, strict=True):
        assert image.ndim == 2 and image.dtype == np.uint8 and image.shape[1] == 500
        assert mask is not None and mask.shape == image.shape
    assert all(m is not None and m.any() for m in loaded.masks[:3])

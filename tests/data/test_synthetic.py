from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from flawscope.data.imageio import read_image, read_mask
from flawscope.data.synthetic import (
    DEFECT_KINDS,
    MASK_LEVEL,
    TEXTURES,
    SyntheticSpec,
    add_defect,
    make_part,
    write_dataset,
)
from flawscope.errors import InputError

SMALL = (96, 128)  # non-square on purpose: (height, width)


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return d if d.ndim == 2 else d.max(axis=2)


@pytest.mark.parametrize("texture", TEXTURES)
@pytest.mark.parametrize("grayscale", [True, False])
def test_parts_vary_naturally_but_are_deterministic(texture: str, grayscale: bool) -> None:
    spec = SyntheticSpec(texture=texture, size=SMALL, grayscale=grayscale)
    parts = [make_part(np.random.default_rng(seed), spec) for seed in range(4)]
    shape = SMALL if grayscale else (*SMALL, 3)
    assert all(p.shape == shape and p.dtype == np.uint8 for p in parts)
    assert np.array_equal(parts[0], make_part(np.random.default_rng(0), spec))
    for a in parts:
        assert a.std() > 5  # a texture, not a flat plate
        for b in parts:
            if a is not b:
                assert _diff(a, b).mean() > 1.0


def test_printed_parts_are_aligned() -> None:
    spec = SyntheticSpec(texture="printed", size=(128, 128))
    a, b = (make_part(np.random.default_rng(seed), spec).astype(np.float64) for seed in (1, 2))
    assert not np.array_equal(a, b)
    # The same print in (almost) the same place: the two parts correlate strongly.
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.85


@pytest.mark.parametrize("texture", TEXTURES)
@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_defects_change_pixels_exactly_where_the_mask_is(texture: str, kind: str) -> None:
    for seed, grayscale in ((0, True), (1, False)):
        rng = np.random.default_rng(seed)
        good = make_part(rng, SyntheticSpec(texture=texture, size=SMALL, grayscale=grayscale))
        before = good.copy()
        defective, mask = add_defect(good, kind, rng)
        assert np.array_equal(good, before), "add_defect must not modify its input"
        assert defective.shape == good.shape and defective.dtype == np.uint8
        assert mask.shape == SMALL and mask.dtype == bool
        assert 10 <= mask.sum() < 0.15 * mask.size  # a local defect, not the whole part
        diff = _diff(defective, good)
        inside, outside = diff[mask].mean(), diff[~mask].mean()
        assert inside > 15 and inside > 50 * max(outside, 0.01)
        assert diff[~mask].max() < MASK_LEVEL  # nothing visible was left out of the mask


def test_defect_masks_differ_between_draws() -> None:
    spec = SyntheticSpec(size=SMALL)
    rng = np.random.default_rng(3)
    masks = [add_defect(make_part(rng, spec), "scratch", rng)[1] for _ in range(3)]
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])


def test_add_defect_rejects_unknown_kind_and_bad_images() -> None:
    image = make_part(np.random.default_rng(0), SyntheticSpec(size=SMALL))
    with pytest.raises(ValueError, match="unknown defect kind"):
        add_defect(image, "dent", np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8"):
        add_defect(image.astype(np.uint16), "spot", np.random.default_rng(0))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("texture", "marble"),
        ("size", (16, 64)),
        ("defect_types", ("scratch", "dent")),
        ("n_train", 0),
        ("seed", -1),
    ],
)
def test_spec_validation(field: str, value: object) -> None:
    with pytest.raises(InputError, match=f"synthetic.{field}"):
        SyntheticSpec(**{field: value})  # type: ignore[arg-type]


def _small_spec(**kw: object) -> SyntheticSpec:
    base: dict[str, object] = dict(
        texture="fabric",
        size=(80, 112),
        n_train=4,
        n_test_good=2,
        n_test_defect_per_type=2,
        defect_types=("crack", "missing"),
    )
    base.update(kw)
    return SyntheticSpec(**base)  # type: ignore[arg-type]


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_write_dataset_layout_and_read_back(tmp_path: Path) -> None:
    spec = _small_spec(grayscale=False)
    dataset = write_dataset(tmp_path / "set", spec)
    assert dataset.layout == "mvtec"
    assert (len(dataset.train), len(dataset.test_good), len(dataset.test_defect)) == (4, 2, 4)
    assert dataset.defect_types == ["crack", "missing"]
    for sample in dataset.train + dataset.test:
        image = read_image(sample.path)
        assert image.shape == (80, 112, 3) and image.dtype == np.uint8
        if sample.label:
            assert sample.mask_path is not None and sample.mask_path.endswith("_mask.png")
            mask = read_mask(sample.mask_path, image.shape[:2])
            assert mask.any()
            raw = read_image(sample.mask_path)
            assert set(np.unique(raw).tolist()) == {0, 255}


def _write_files(root: Path, spec: SyntheticSpec) -> dict[str, bytes]:
    write_dataset(root, spec)
    return _files(root)


def test_write_dataset_is_deterministic_per_seed(tmp_path: Path) -> None:
    first = _write_files(tmp_path / "a", _small_spec())
    again = _write_files(tmp_path / "b", _small_spec())
    other = _write_files(tmp_path / "c", _small_spec(seed=1))
    assert first == again
    assert first.keys() == other.keys()
    assert all(first[k] != other[k] for k in first)
    # Adding a defect type leaves the other images unchanged.
    more = _write_files(tmp_path / "d", _small_spec(defect_types=("crack", "spot", "missing")))
    assert len(more) > len(first)
    assert all(more[k] == v for k, v in first.items())


def test_write_dataset_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("precious")
    with pytest.raises(InputError, match="not empty"):
        write_dataset(tmp_path / "busy", _small_spec())
    assert (tmp_path / "busy" / "keep.txt").read_text() == "precious"
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        write_dataset(tmp_path / "file", _small_spec())


def test_default_set_is_written_in_a_few_seconds(tmp_path: Path) -> None:
    start = time.perf_counter()
    dataset = write_dataset(tmp_path / "default", SyntheticSpec())
    elapsed = time.perf_counter() - start
    assert (len(dataset.train), len(dataset.test_good), len(dataset.test_defect)) == (60, 20, 30)
    # About 2 s on 2 shared cores; the bound leaves room for a busy machine.
    assert elapsed < 20.0, f"writing the default synthetic set took {elapsed:.1f} s"

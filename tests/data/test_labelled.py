"""Labelled training data: the three layouts, groups, boxes, and bad input refused before training."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from flawscope.data.labelled import check_labelled, load_labelled, read_voc
from flawscope.declaration import Task
from flawscope.errors import InputError


def _image(path: Path, size=(40, 48), value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full(size, value, np.uint8))
    return path


def _plain(root: Path, counts: dict[str, int], masks: bool = True) -> Path:
    for cls, n in counts.items():
        for i in range(n):
            _image(root / cls / f"{cls}_{i}.png", value=60 + 10 * i)
            if masks and cls != "good":
                _image(root / "masks" / cls / f"{cls}_{i}.png", value=255)
    return root


def test_plain_layout_with_masks_and_boxes(tmp_path):
    root = _plain(tmp_path / "d", {"good": 6, "crack": 5})
    (root / "annotations").mkdir()
    (root / "annotations" / "crack_0.xml").write_text(
        "<annotation><object><name>crack</name><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>10</xmax>"
        "<ymax>12</ymax></bndbox></object></annotation>"
    )
    data = load_labelled(root)
    assert data.layout == "plain" and data.classes == ("good", "crack")
    assert data.counts() == {"good": 6, "crack": 5}
    crack = [s for s in data.samples if s.cls == "crack"]
    assert all(s.mask_path for s in crack)
    assert crack[0].boxes == ((1.0, 2.0, 10.0, 12.0, "crack"),)  # VOC is 1-based, inclusive
    check_labelled(data, Task.SEGMENT)


def test_mvtec_layout_extended_with_train_defects(tmp_path):
    root = tmp_path / "m"
    for i in range(6):
        _image(root / "train" / "good" / f"kos1{i}_g.png")
        _image(root / "train" / "dent" / f"kos0{i % 3}_d{i}.png")
        _image(root / "ground_truth" / "dent" / f"kos0{i % 3}_d{i}_mask.png", value=255)
        _image(root / "test" / "good" / f"kos2{i}_t.png")
    data = load_labelled(root, group_pattern=r"kos\d+")
    assert data.layout == "mvtec"
    assert {s.split for s in data.samples} == {"train", "test"}
    dents = [s for s in data.samples if s.cls == "dent"]
    assert {s.group for s in dents} == {"kos00", "kos01", "kos02"} and all(s.mask_path for s in dents)
    _image(root / "train" / "good" / "other.png")
    with pytest.raises(InputError, match=r"other.png.*does not match the group pattern"):
        load_labelled(root, group_pattern=r"kos\d+")


def test_csv_with_groups_and_relative_paths(tmp_path):
    for i in range(3):
        _image(tmp_path / "img" / f"a{i}.png")
    (tmp_path / "labels.csv").write_text(
        "path,label,mask,group\nimg/a0.png,good,,p1\nimg/a1.png,scratch,,p1\nimg/a2.png,OK,,p2\n"
    )
    data = load_labelled(tmp_path / "labels.csv")
    assert [s.cls for s in data.samples] == ["good", "scratch", "good"]
    assert [s.group for s in data.samples] == ["p1", "p1", "p2"]


def test_csv_probability_column_reaches_the_targets(tmp_path):
    from flawscope.models.train_supervised import read_labelled

    for i in range(3):
        _image(tmp_path / "img" / f"a{i}.png")
    rows = "img/a0.png,good,0\nimg/a1.png,crack,0.666667\nimg/a2.png,good,0.333333\n"
    (tmp_path / "labels.csv").write_text("path,label,probability\n" + rows)
    data = load_labelled(tmp_path / "labels.csv")
    assert [s.probability for s in data.samples] == [0.0, 0.666667, 0.333333]
    assert read_labelled(data.samples).targets.probabilities == (0.0, 0.666667, 0.333333)
    (tmp_path / "plain.csv").write_text("path,label\nimg/a0.png,good\n")  # no column: unknown
    plain = load_labelled(tmp_path / "plain.csv").samples
    assert plain[0].probability is None and read_labelled(plain).targets.probabilities == ()


@pytest.mark.parametrize("value", ["", "high", "1.5", "-0.1", "nan"])
def test_a_bad_probability_names_the_line(tmp_path, value):
    _image(tmp_path / "img" / "a0.png")
    _image(tmp_path / "img" / "a1.png")
    rows = f"img/a0.png,good,0\nimg/a1.png,crack,{value}\n"
    (tmp_path / "bad.csv").write_text("path,label,probability\n" + rows)
    with pytest.raises(InputError, match=r"bad.csv:3.*probability must be a number in \[0, 1\]"):
        load_labelled(tmp_path / "bad.csv")


def test_csv_errors_name_the_line(tmp_path):
    (tmp_path / "bad.csv").write_text("path,label\nmissing.png,good\n")
    with pytest.raises(InputError, match=r"bad.csv:2.*does not exist"):
        load_labelled(tmp_path / "bad.csv")
    (tmp_path / "nohead.csv").write_text("file,what\nx.png,good\n")
    with pytest.raises(InputError, match="header must name"):
        load_labelled(tmp_path / "nohead.csv")


def test_one_class_only_is_refused(tmp_path):
    data = load_labelled(_plain(tmp_path / "d", {"good": 8}))
    with pytest.raises(InputError, match="one class only"):
        check_labelled(data, Task.CLASSIFY)


def test_a_class_with_fewer_than_five_images_is_named(tmp_path):
    data = load_labelled(_plain(tmp_path / "d", {"good": 8, "dent": 3}))
    with pytest.raises(InputError, match=r"class 'dent'.*3 image"):
        check_labelled(data, Task.CLASSIFY)


def test_a_label_outside_the_expected_classes_names_the_file(tmp_path):
    data = load_labelled(_plain(tmp_path / "d", {"good": 6, "dent": 5, "scuff": 5}))
    with pytest.raises(InputError, match=r"scuff_0.png.*'scuff' is not one of"):
        check_labelled(data, Task.CLASSIFY, classes=["good", "dent"])


def test_masks_missing_for_some_images_fall_back_to_image_labels(tmp_path):
    root = _plain(tmp_path / "d", {"good": 6, "dent": 6})
    for i in (4, 5):
        (root / "masks" / "dent" / f"dent_{i}.png").unlink()
    _, notes = check_labelled(load_labelled(root), Task.SEGMENT)
    assert any("2 of 6 defective images have no mask" in n and "image label" in n for n in notes)
    for i in range(4):
        (root / "masks" / "dent" / f"dent_{i}.png").unlink()
    with pytest.raises(InputError, match="needs defect masks"):
        check_labelled(load_labelled(root), Task.SEGMENT)


def test_a_mask_of_another_size_names_the_mask(tmp_path):
    root = _plain(tmp_path / "d", {"good": 6, "dent": 5})
    _image(root / "masks" / "dent" / "dent_2.png", size=(20, 20), value=255)
    with pytest.raises(InputError, match=r"dent_2.png.*20x20 px but its image"):
        check_labelled(load_labelled(root), Task.SEGMENT)


def test_a_detect_task_needs_boxes(tmp_path):
    with pytest.raises(InputError, match="needs boxes"):
        check_labelled(load_labelled(_plain(tmp_path / "d", {"good": 6, "dent": 5})), Task.DETECT)


def test_bad_voc_file_is_named(tmp_path):
    (tmp_path / "a.xml").write_text("<annotation><object><name>x</name></object>")
    with pytest.raises(InputError, match=r"a.xml"):
        read_voc(tmp_path / "a.xml")

from __future__ import annotations

import os
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from flawscope.data.datasets import load_dataset
from flawscope.data.imageio import is_image_file, read_image, read_mask, sha256_array, sha256_file
from flawscope.errors import InputError


def _rgb(shape: tuple[int, int], dtype: type = np.uint8, seed: int = 0) -> np.ndarray:
    high = 256 if dtype == np.uint8 else 65536
    return np.random.default_rng(seed).integers(0, high, size=(*shape, 3)).astype(dtype)


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims width x height but whose pixel data is a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


def _raises(path: Path, *fragments: str, call=read_image) -> InputError:
    with pytest.raises(InputError) as info:
        call(path)
    message = str(info.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message
    return info.value


# ---------------------------------------------------------------- bad files


def test_corrupt_file_with_png_suffix(tmp_path: Path) -> None:
    path = tmp_path / "noise.png"
    path.write_bytes(np.random.default_rng(0).bytes(2048))
    _raises(path, "not a readable image")


def test_truncated_jpeg(tmp_path: Path) -> None:
    whole = tmp_path / "whole.jpg"
    assert cv2.imwrite(str(whole), _rgb((200, 240)))
    data = whole.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    assert read_image(whole).shape == (200, 240, 3)
    _raises(cut, "truncated")


def test_missing_empty_and_directory_paths(tmp_path: Path) -> None:
    _raises(tmp_path / "absent.png", "does not exist")
    (tmp_path / "empty.png").write_bytes(b"")
    _raises(tmp_path / "empty.png", "file is empty")
    (tmp_path / "folder.png").mkdir()
    _raises(tmp_path / "folder.png", "is a directory")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read a chmod 000 file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "locked.png"
    assert cv2.imwrite(str(path), np.zeros((32, 32), np.uint8))
    path.chmod(0)
    try:
        _raises(path, "permission denied")
    finally:
        path.chmod(0o644)


def test_empty_training_folder_and_non_dataset_folder(tmp_path: Path) -> None:
    (tmp_path / "set" / "train" / "good").mkdir(parents=True)
    _raises(
        tmp_path / "set" / "train" / "good",
        "training folder has no images",
        call=lambda _: load_dataset(tmp_path / "set"),
    )
    (tmp_path / "random" / "sub").mkdir(parents=True)
    (tmp_path / "random" / "readme.txt").write_text("hello")
    _raises(tmp_path / "random", "not a dataset", "train/good/", call=load_dataset)


def test_mask_of_the_wrong_size(tmp_path: Path) -> None:
    path = tmp_path / "m_mask.png"
    assert cv2.imwrite(str(path), np.full((20, 30), 255, np.uint8))
    _raises(path, "mask is 30x20 px", "image is 64x48 px", call=lambda p: read_mask(p, (48, 64)))
    mask = read_mask(path, (20, 30))
    assert mask.dtype == bool and mask.all()


def test_tiny_image(tmp_path: Path) -> None:
    path = tmp_path / "dot.png"
    assert cv2.imwrite(str(path), np.zeros((1, 1), np.uint8))
    _raises(path, "1x1 px", "at least 16x16")


def test_huge_image_is_rejected_from_its_header(tmp_path: Path) -> None:
    path = _png_header_only(tmp_path / "huge.png", 30000, 30000)
    assert path.stat().st_size < 1000
    start = time.perf_counter()
    _raises(path, "too large")
    assert time.perf_counter() - start < 1.0  # 900 MB were never decoded


def _tiff_header_only(path: Path, width: int, height: int) -> Path:
    """A little-endian TIFF whose one IFD describes a width x height 8-bit image, with no pixels."""
    tags = [
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 0),
        (277, 3, 1),
    ]
    tags += [(278, 4, height), (279, 4, width * height)]
    data_offset = 8 + 2 + 12 * len(tags) + 4
    out = b"II*\x00" + struct.pack("<IH", 8, len(tags))
    for tag, kind, value in tags:
        value = data_offset if tag == 273 else value
        out += struct.pack("<HHI", tag, kind, 1) + struct.pack(
            "<HH" if kind == 3 else "<I", *((value, 0) if kind == 3 else (value,))
        )
    path.write_bytes(out + struct.pack("<I", 0) + b"\0" * 64)
    return path


def test_oversized_tiff_is_rejected_from_its_header(tmp_path: Path) -> None:
    path = _tiff_header_only(tmp_path / "huge.tif", 20000, 20000)
    assert path.stat().st_size < 1000
    _raises(path, "20000x20000", "megapixel limit")


# ---------------------------------------------------------------- good files of every kind


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])  # OpenCV writes LZW-compressed TIFFs
def test_8bit_grey_and_colour_round_trip(tmp_path: Path, suffix: str) -> None:
    rgb = _rgb((40, 56))
    colour = tmp_path / f"colour{suffix}"
    grey = tmp_path / f"grey{suffix}"
    assert cv2.imwrite(str(colour), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert cv2.imwrite(str(grey), rgb[:, :, 1])
    read = read_image(colour)
    assert read.dtype == np.uint8 and read.shape == (40, 56, 3)
    assert np.array_equal(read, rgb)  # RGB order, not OpenCV's BGR
    read = read_image(grey)
    assert read.dtype == np.uint8 and read.shape == (40, 56)
    assert np.array_equal(read, rgb[:, :, 1])


def test_jpeg_colour_and_grey(tmp_path: Path) -> None:
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:, :, 0] = 220  # red part
    assert cv2.imwrite(str(tmp_path / "c.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert cv2.imwrite(str(tmp_path / "g.jpeg"), rgb[:, :, 0])
    colour = read_image(tmp_path / "c.jpg")
    assert colour.shape == (48, 64, 3) and colour.dtype == np.uint8
    assert colour[:, :, 0].mean() > 200 and colour[:, :, 2].mean() < 30
    assert read_image(tmp_path / "g.jpeg").shape == (48, 64)


def test_16bit_png_grey_and_colour(tmp_path: Path) -> None:
    rgb = _rgb((30, 44), np.uint16)
    assert cv2.imwrite(str(tmp_path / "c16.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert cv2.imwrite(str(tmp_path / "g16.png"), rgb[:, :, 0])
    colour = read_image(tmp_path / "c16.png")
    assert colour.dtype == np.uint16 and np.array_equal(colour, rgb)
    grey = read_image(tmp_path / "g16.png")
    assert grey.dtype == np.uint16 and np.array_equal(grey, rgb[:, :, 0])
    data = (tmp_path / "c16.png").read_bytes()
    (tmp_path / "cut16.png").write_bytes(data[: len(data) // 2])
    _raises(tmp_path / "cut16.png", "truncated")


def test_16bit_tiff_grey_colour_and_planar(tmp_path: Path) -> None:
    rgb = _rgb((30, 44), np.uint16, seed=2)
    tifffile.imwrite(tmp_path / "g.tif", rgb[:, :, 2])
    tifffile.imwrite(tmp_path / "c.tiff", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "p.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    grey = read_image(tmp_path / "g.tif")
    assert grey.dtype == np.uint16 and np.array_equal(grey, rgb[:, :, 2])
    # OpenCV writes LZW-compressed TIFFs, which tifffile alone cannot decode.
    assert cv2.imwrite(str(tmp_path / "lzw.tif"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    for name in ("c.tiff", "p.tif", "lzw.tif"):
        colour = read_image(tmp_path / name)
        assert colour.dtype == np.uint16 and np.array_equal(colour, rgb), name


def test_alpha_and_palette_images_become_rgb(tmp_path: Path) -> None:
    rgba = np.dstack([_rgb((20, 24)), np.full((20, 24), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.array_equal(read_image(tmp_path / "a.png"), rgba[:, :, :3])
    Image.fromarray(rgba[:, :, :3]).convert("P").save(tmp_path / "p.png")
    read = read_image(tmp_path / "p.png")
    assert read.dtype == np.uint8 and read.ndim in (2, 3) and read.shape[:2] == (20, 24)


def test_suffixes_and_hashes(tmp_path: Path) -> None:
    assert all(is_image_file(f"x{s}") for s in (".png", ".JPG", ".jpeg", ".bmp", ".tif", ".TIFF"))
    assert not any(is_image_file(f"x{s}") for s in (".txt", ".gif", ""))
    image = _rgb((16, 16))
    assert cv2.imwrite(str(tmp_path / "h.png"), image)
    assert sha256_file(tmp_path / "h.png") == sha256_file(str(tmp_path / "h.png"))
    assert sha256_array(image) == sha256_array(image.copy()) != sha256_array(image[:, :, ::-1].copy())

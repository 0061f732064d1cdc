"""Strip images read in row blocks (streamed when the format allows), and the web simulator source."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile

from flawscope.acquire import open_source
from flawscope.acquire.webstrip import WebStripSource
from flawscope.errors import InputError


def _strip(rows: int = 300, width: int = 24) -> np.ndarray:
    return (np.arange(rows * width).reshape(rows, width) % 251).astype(np.uint8)


@pytest.mark.parametrize("name", ["strip.npy", "strip.tif"])
def test_streamed_formats_are_memory_mapped_and_delivered_in_blocks(tmp_path, name) -> None:
    strip = _strip()
    path = tmp_path / name
    np.save(path, strip) if name.endswith(".npy") else tifffile.imwrite(path, strip)
    source = open_source(f"webstrip://{path}?block=64&frame=64&overlap=8")
    assert isinstance(source, WebStripSource) and isinstance(source._array, np.memmap)
    blocks = list(source.blocks())
    assert [b.first_row for b in blocks] == [0, 64, 128, 192, 256]
    assert np.array_equal(np.concatenate([b.rows for b in blocks]), strip)
    frames = list(open_source(f"webstrip://{path}?block=64&frame=64&overlap=8"))
    assert frames[0].meta["first_row"] == "0" and frames[1].meta["first_row"] == "56"
    assert all(f.image is not None and f.image.shape == (64, 24) for f in frames)


def test_png_strip_is_read_when_it_fits(tmp_path) -> None:
    path = tmp_path / "strip.png"
    cv2.imwrite(str(path), _strip())
    blocks = list(open_source(f"webstrip://{path}?block=100").blocks())
    assert sum(b.rows.shape[0] for b in blocks) == 300


def test_a_strip_too_large_to_decode_whole_is_refused_with_its_size(tmp_path) -> None:
    path = tmp_path / "big.png"
    cv2.imwrite(str(path), np.zeros((4000, 500), np.uint8))
    with pytest.raises(InputError, match=r"big.png: 500 x 4000 strip needs 2 MB decoded.*uncompressed TIFF"):
        open_source(f"webstrip://{path}?max_mb=1")


def test_unreadable_and_missing_strips_name_the_file(tmp_path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(InputError, match=r"broken\.png: cannot read the strip image"):
        open_source(f"webstrip://{bad}")
    with pytest.raises(InputError, match=r"nothere\.tif: strip image not found"):
        open_source(f"webstrip://{tmp_path / 'nothere.tif'}")
    odd = tmp_path / "odd.npy"
    np.save(odd, np.zeros((10, 4, 5), np.uint8))
    with pytest.raises(InputError, match=r"odd.npy: a strip must be"):
        open_source(f"webstrip://{odd}")


def test_websim_paces_rows_by_the_encoder_and_drops_what_it_is_told(tmp_path) -> None:
    source = open_source("websim://?length=1&width=128&speed=600&frame=64&overlap=8&drop=300:20&block=50")
    assert source.line_rate_hz == pytest.approx(10_000.0)  # 600 m/min at 1 mm per row
    frames = list(source)
    missing = [f for f in frames if f.image is None]
    assert len(missing) == 1 and missing[0].meta["first_row"] == "300" and missing[0].meta["n_rows"] == "20"
    assert "not inspected: rows 300-319 not received" in (missing[0].error or "")
    assert source.assembly.rows_missing == 20 and source.missed == 20
    with pytest.raises(InputError, match="drop"):
        open_source("websim://?drop=12")


def test_a_video_of_a_web_gives_its_frames_as_consecutive_row_blocks(tmp_path) -> None:
    path = tmp_path / "web.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 32))
    for k in range(6):
        writer.write(np.full((32, 64, 3), 40 * k, np.uint8))
    writer.release()
    source = open_source(f"webvideo://{path}?rows=20&frame=32&overlap=8")
    blocks = list(source.blocks())
    assert [b.first_row for b in blocks] == [0, 20, 40, 60, 80, 100]
    assert all(b.rows.shape == (20, 64) for b in blocks)  # grey stays grey, the top 20 rows
    assert abs(int(blocks[3].rows.mean()) - 120) <= 3
    with pytest.raises(InputError, match="video file not found"):
        open_source(f"webvideo://{tmp_path / 'none.avi'}")

"""Image sources on real files: folder, watched folder, video, simulator, URI parsing."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from flawscope.acquire import FolderSource, SimSource, VideoSource, WatchSource, open_source
from flawscope.errors import InputError


def write_png(path: Path, value: int, size: tuple[int, int] = (32, 40)) -> np.ndarray:
    image = np.full(size, value, np.uint8)
    image[0, 0] = 255 - value  # not flat, so a codec cannot cheat
    assert cv2.imwrite(str(path), image)
    return image


def collect(source, limit_s: float = 15.0) -> list:
    """All frames of a source, closing it after ``limit_s`` so that a bug cannot hang the test."""
    guard = threading.Timer(limit_s, source.close)
    guard.start()
    try:
        return list(source)
    finally:
        guard.cancel()


# ------------------------------------------------------------------------------------- folder


def test_folder_gives_every_image_sorted_and_unreadable_ones_as_error_frames(tmp_path: Path) -> None:
    write_png(tmp_path / "b.png", 20)
    write_png(tmp_path / "a.png", 10)
    (tmp_path / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG")
    (tmp_path / "notes.txt").write_text("not a part")
    (tmp_path / ".hidden.png").write_bytes(b"")

    frames = collect(open_source(tmp_path))

    assert [f.part_id for f in frames] == ["a", "b", "c"]
    assert frames[0].image is not None and frames[0].image[5, 5] == 10 and frames[0].error is None
    assert frames[2].image is None and "c.png" in (frames[2].error or "")
    assert frames[1].meta["path"] == str(tmp_path / "b.png")
    assert all(f.source.startswith("folder://") for f in frames)


def test_folder_uri_and_duplicate_stems(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", 10)
    cv2.imwrite(str(tmp_path / "a.bmp"), np.zeros((20, 20), np.uint8))
    frames = collect(open_source(f"folder://{tmp_path}"))
    ids = [f.part_id for f in frames]
    assert len(ids) == 2 and len(set(ids)) == 2
    assert all(f.error is None for f in frames)


def test_folder_missing_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        FolderSource(tmp_path / "nope")


def test_folder_takes_its_subfolders_by_default(tmp_path: Path) -> None:
    # A dataset's test/ folder: one subfolder per kind of part, nothing at the top.
    for sub in ("good", "crack/deep", ".cache"):
        (tmp_path / sub).mkdir(parents=True)
    write_png(tmp_path / "good" / "000.png", 10)
    write_png(tmp_path / "crack" / "000.png", 20)
    write_png(tmp_path / "crack" / "deep" / "001.png", 30)
    write_png(tmp_path / ".cache" / "x.png", 40)
    frames = collect(open_source(tmp_path))
    assert [f.part_id for f in frames] == ["crack/000", "crack/deep/001", "good/000"]
    assert len(FolderSource(tmp_path)) == 3


def test_folder_without_recursion_or_images_says_how_to_find_them(tmp_path: Path) -> None:
    (tmp_path / "good").mkdir()
    write_png(tmp_path / "good" / "000.png", 10)
    with pytest.raises(InputError, match=r"no images directly in this folder, but 1 in its subfolders.*=1"):
        open_source(f"folder://{tmp_path}?recursive=0")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images found, subfolders included"):
        open_source(tmp_path / "empty")


def test_option_values_are_described_in_words(tmp_path: Path, sim_dataset: Path) -> None:
    with pytest.raises(InputError, match="option count='many' is not a valid whole number"):
        open_source(f"sim://{sim_dataset}?count=many")
    with pytest.raises(InputError, match="option recursive='maybe' is not a valid yes/no value"):
        open_source(f"folder://{tmp_path}?recursive=maybe")


# --------------------------------------------------------------------------------------- URIs


def test_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(InputError, match=r"unknown source.*expected a folder path, ") as caught:
        open_source("ftp://host/parts")
    for scheme in ("watch", "video", "rtsp", "usb", "gige", "sim"):
        assert f"{scheme}://" in str(caught.value)


def test_the_source_registry_refuses_a_second_module_for_a_scheme(tmp_path: Path) -> None:
    from flawscope.acquire import SOURCES, Option, SourceTarget, register_source

    assert {"folder", "watch", "video", "rtsp", "usb", "gige", "sim"} <= set(SOURCES)
    with pytest.raises(ValueError, match=r"already registered by flawscope\.acquire\.simulator"):
        register_source("sim")(lambda target, **options: None)

    # A new protocol is one module: register an opener and open_source finds it, options converted.
    @register_source("testcam", options={"n": Option("n", int)}, example="testcam://x?n=3")
    def _open(target: SourceTarget, **options: object) -> FolderSource:
        opened.append((target.location, options))
        return FolderSource(tmp, uri=target.uri)

    opened: list[tuple[str, dict[str, object]]] = []
    tmp = tmp_path  # a folder source refuses a folder without images
    write_png(tmp / "part.png", 10)
    try:
        source = open_source("testcam://dev0/a?n=3")
        assert opened == [("dev0/a", {"n": 3})]
        assert source.uri == "testcam://dev0/a?n=3"
        health = source.health()
        assert health.connected and health.missed == 0 and health.last_error == ""
        with pytest.raises(InputError, match=r"option n='x' is not a valid whole number"):
            open_source("testcam://dev0?n=x")
    finally:
        SOURCES.pop("testcam")


def test_unknown_and_invalid_options_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown option 'sped'"):
        open_source(f"watch://{tmp_path}?sped=3")
    with pytest.raises(InputError, match="settle"):
        open_source(f"watch://{tmp_path}?settle=fast")
    with pytest.raises(InputError, match="camera index"):
        open_source("usb://front")


# ---------------------------------------------------------------------------------- watch


def _write_slowly(path: Path, data: bytes, chunks: int, delay: float) -> None:
    step = -(-len(data) // chunks)
    with open(path, "wb") as out:
        for start in range(0, len(data), step):
            out.write(data[start : start + step])
            out.flush()
            time.sleep(delay)


def test_watch_takes_slowly_written_files_only_when_complete_and_reports_corrupt_ones(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    image = np.random.default_rng(0).integers(0, 255, (64, 80), dtype=np.uint8)
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    source = WatchSource(inbox, settle_s=0.1, poll_s=0.02, timeout_s=1.5, count=3)

    def writer() -> None:
        # Slower than settle_s between chunks: the watcher sees a stable but truncated file.
        _write_slowly(inbox / "slow.png", encoded.tobytes(), chunks=4, delay=0.25)
        (inbox / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage that never becomes an image")
        hidden = inbox / ".renamed.png.part"
        cv2.imwrite(str(inbox / "staging.bmp"), image)  # written fully, then renamed into place
        (inbox / "staging.bmp").rename(hidden)
        hidden.rename(inbox / "renamed.png")

    thread = threading.Thread(target=writer)
    thread.start()
    frames = collect(source)
    thread.join()

    by_id = {f.part_id: f for f in frames}
    assert sorted(by_id) == ["broken", "renamed", "slow"]  # each exactly once
    assert len(frames) == 3
    assert by_id["slow"].error is None
    np.testing.assert_array_equal(by_id["slow"].image, image)
    assert by_id["renamed"].error is None
    assert by_id["broken"].image is None and "unreadable" in (by_id["broken"].error or "")


def test_watch_existing_files_and_idle_end(tmp_path: Path) -> None:
    write_png(tmp_path / "old.png", 5)
    taken = collect(WatchSource(tmp_path, settle_s=0.02, poll_s=0.01, idle_s=0.3))
    assert [f.part_id for f in taken] == ["old"]
    ignored = collect(WatchSource(tmp_path, settle_s=0.02, poll_s=0.01, idle_s=0.3, existing=False))
    assert ignored == []


def test_watch_close_from_another_thread_ends_iteration(tmp_path: Path) -> None:
    source = open_source(f"watch://{tmp_path}?poll=0.01")
    threading.Timer(0.2, source.close).start()
    started = time.monotonic()
    assert list(source) == []
    assert time.monotonic() - started < 2.0


# ---------------------------------------------------------------------------------- video


def write_video(path: Path, n: int, fourcc: str) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (64, 48))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} video"
    for i in range(n):
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[:, :, 2] = 20 + 20 * i  # red channel in OpenCV's BGR order
        writer.write(frame)
    writer.release()


@pytest.mark.parametrize(("name", "fourcc"), [("run.avi", "MJPG"), ("run.mp4", "mp4v")])
def test_video_file_frames_in_order_as_rgb(tmp_path: Path, name: str, fourcc: str) -> None:
    write_video(tmp_path / name, 8, fourcc)
    frames = collect(open_source(f"video://{tmp_path / name}"))
    assert [f.part_id for f in frames] == [f"run-{i:06d}" for i in range(1, 9)]
    reds = [float(f.image[:, :, 0].mean()) for f in frames]
    assert all(f.image.shape == (48, 64, 3) for f in frames)
    assert reds == sorted(reds) and reds[-1] > reds[0] + 100  # red is channel 0 after BGR -> RGB
    every = collect(open_source(f"video://{tmp_path / name}?every=3"))
    assert [f.meta["frame_index"] for f in every] == ["1", "4", "7"]


def test_video_missing_or_undecodable_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        open_source(f"video://{tmp_path / 'none.mp4'}")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all")
    with pytest.raises(InputError, match="cannot open"):
        open_source(f"video://{tmp_path / 'junk.mp4'}")


def test_live_stream_reconnects_with_backoff_and_counts_missed_frames(tmp_path: Path) -> None:
    video = tmp_path / "cam.avi"
    write_video(video, 6, "MJPG")
    opened: list[float] = []

    def flaky(target: str | int) -> cv2.VideoCapture:
        # The "stream" drops at the end of the file; the next two reconnection attempts fail.
        opened.append(time.monotonic())
        return cv2.VideoCapture() if len(opened) in (2, 3) else cv2.VideoCapture(str(video))

    source = VideoSource(
        "cam",
        uri="usb://7",
        live=True,
        fps=100,
        count=9,
        backoff_s=0.05,
        max_backoff_s=1.0,
        capture_factory=flaky,
    )
    frames = collect(source)

    assert len(frames) == 9 and len({f.part_id for f in frames}) == 9
    assert source.reconnects == 1 and len(opened) == 4
    gaps = np.diff(opened[1:])
    assert gaps[1] > gaps[0] * 1.5  # the wait doubled after a failed attempt
    assert source.missed >= 30  # >= 0.05 + 0.1 + 0.2 s down at 100 fps
    assert int(frames[6].meta["missed_before"]) == source.missed
    assert "missed_before" not in frames[7].meta


def test_live_stream_gives_up_after_max_retries() -> None:
    source = VideoSource(
        3,
        uri="usb://3",
        live=True,
        backoff_s=0.01,
        max_retries=3,
        capture_factory=lambda t: cv2.VideoCapture(),
    )
    with pytest.raises(InputError, match="gave up after 3"):
        collect(source)


# ------------------------------------------------------------------------------ simulator


@pytest.fixture(scope="module")
def sim_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from flawscope.data.synthetic import SyntheticSpec, write_dataset

    root = tmp_path_factory.mktemp("sim") / "parts"
    write_dataset(root, SyntheticSpec(size=(32, 32), n_train=6, n_test_good=3, n_test_defect_per_type=2))
    return root


def test_simulator_defect_ratio_ground_truth_and_determinism(sim_dataset: Path) -> None:
    frames = collect(open_source(f"sim://{sim_dataset}?rate=0&defect_ratio=0.3&count=2000&seed=4"))
    labels = np.array([int(f.meta["label"]) for f in frames])
    assert len(frames) == 2000 and len({f.part_id for f in frames}) == 2000
    assert abs(labels.mean() - 0.3) < 0.05  # binomial sd is 0.01
    for frame in frames[:200]:
        assert (frame.meta["defect_type"] == "good") == (frame.meta["label"] == "0")
        assert ("/good/" in frame.meta["path"]) == (frame.meta["label"] == "0")
        assert frame.image is not None and frame.error is None
    again = collect(SimSource(sim_dataset, rate=0, defect_ratio=0.3, count=50, seed=4))
    assert [f.meta["path"] for f in again] == [f.meta["path"] for f in frames[:50]]


def test_simulator_part_ids_are_unique_per_run_unless_a_prefix_is_given(sim_dataset: Path) -> None:
    first = collect(SimSource(sim_dataset, rate=0, count=3, seed=1))
    second = collect(SimSource(sim_dataset, rate=0, count=3, seed=1))
    ids = [f.part_id for f in first + second]
    assert len(set(ids)) == 6, ids
    assert [f.meta["path"] for f in first] == [f.meta["path"] for f in second]  # same parts, new ids
    assert all(part.startswith("sim-") and part.endswith(f"-{i:06d}") for i, part in enumerate(ids[:3]))
    given = collect(SimSource(sim_dataset, rate=0, count=2, prefix="lot7", start=10))
    assert [f.part_id for f in given] == ["lot7-000010", "lot7-000011"]


def test_simulator_keeps_its_rate(sim_dataset: Path) -> None:
    source = SimSource(sim_dataset, rate=40, count=21, defect_ratio=0.0)
    started = time.monotonic()
    frames = collect(source)
    elapsed = time.monotonic() - started
    assert len(frames) == 21
    assert 0.45 <= elapsed < 1.5  # 20 intervals at 40 parts/s is 0.5 s


def test_simulator_refuses_a_ratio_the_dataset_cannot_give(tmp_path: Path) -> None:
    good = tmp_path / "plain" / "good"
    good.mkdir(parents=True)
    for i in range(3):
        write_png(good / f"{i}.png", 50)
    assert len(collect(SimSource(tmp_path / "plain", rate=0, defect_ratio=0.0, count=5))) == 5
    with pytest.raises(InputError, match="no defective images"):
        SimSource(tmp_path / "plain", defect_ratio=0.2)
    with pytest.raises(InputError, match="defect_ratio"):
        open_source(f"sim://{tmp_path / 'plain'}?defect_ratio=1.5")


def test_backoff_doubles_up_to_its_ceiling() -> None:
    from itertools import islice

    from flawscope.acquire.base import backoff_delays

    assert list(islice(backoff_delays(0.5, 3.0), 6)) == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]

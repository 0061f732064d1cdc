"""Parts inspected through the API: uploaded images judged by the loaded bundle and recorded like the line's.

Each upload is checked (size, format, pixel count from the header) before it is decoded; a file
that fails is answered with its reason and nothing is recorded for it. A checked image is judged,
its file kept in the image store (its map too when it goes to review or fails), and its record
appended to the audit log before the verdict is returned: a verdict given out is always on record.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flawscope.errors import InputError
from flawscope.line.records import judge, make_record
from flawscope.line.store import ImageStore, write_map
from flawscope.types import Frame, InspectionRecord, Outcome
from flawscope.web.imaging import read_upload

logger = logging.getLogger(__name__)
KEEP_MAPS = (Outcome.REVIEW, Outcome.FAIL)


class NoInspectorError(InputError):
    """The app was started without a bundle, so it cannot judge uploads."""


@dataclass(frozen=True)
class UploadResult:
    """What became of one uploaded file: its record, or why it was refused."""

    filename: str
    record: InspectionRecord | None
    error: str | None = None


def inspect_uploads(
    state: Any, files: list[tuple[str, bytes]], user: str, part_ids: list[str] | None = None
) -> list[UploadResult]:
    """Judge and record uploaded images, in one audit transaction.

    Args:
        state: the app's :class:`~flawscope.web.state.WebState`.
        files: ``(file name, bytes)`` per upload.
        user: who uploaded (named in the record's source).
        part_ids: a part id per file (default: ``upload-<random>``).

    Returns:
        One result per file, in order.

    Raises:
        NoInspectorError: no bundle is loaded.
        AuditWriteError: the audit log could not be written (nothing recorded).
    """
    inspector = state.inspector
    if inspector is None:
        raise NoInspectorError("bundle", "this app was started without --bundle, so it cannot inspect images")
    config = state.config
    results: list[UploadResult | None] = [None] * len(files)
    frames: list[tuple[int, Frame, str]] = []
    with tempfile.TemporaryDirectory(prefix="flawscope-upload-") as folder:
        for index, (name, data) in enumerate(files):
            try:
                image, suffix = read_upload(
                    data,
                    name,
                    max_bytes=config.max_upload_bytes,
                    max_pixels=int(config.max_upload_megapixels * 1e6),
                )
            except InputError as exc:
                results[index] = UploadResult(name, None, str(exc))
                continue
            part_id = part_ids[index] if part_ids and index < len(part_ids) and part_ids[index] else ""
            part_id = part_id or f"upload-{uuid.uuid4().hex[:12]}"
            temp = Path(folder) / f"{index}{suffix}"
            temp.write_bytes(data)
            frame = Frame(part_id, image, time.time(), f"api://{user}", meta={"path": str(temp)})
            frames.append((index, frame, name))
        if not frames:
            return [r for r in results if r is not None]
        started = time.perf_counter()
        verdicts = judge([f for _, f, _ in frames], inspector)
        latency = (time.perf_counter() - started) * 1000
        store = ImageStore(state.store_root)
        records = []
        for (_, frame, _), verdict in zip(frames, verdicts, strict=True):
            uri, digest = store.put(frame)
            note = ""
            if verdict.anomaly_map is not None and verdict.outcome in KEEP_MAPS:
                try:
                    write_map(uri, verdict.anomaly_map, verdict.score / verdict.normalized_score)
                except (OSError, ValueError, ZeroDivisionError) as exc:
                    note = f"anomaly map not kept: {exc}"
            records.append(
                make_record(
                    frame,
                    verdict,
                    inspector,
                    station=config.station,
                    latency_ms=latency,
                    image_uri=uri,
                    image_sha256=digest,
                    note=note,
                )
            )
    stored = state.audit.append_many(records)
    for (index, _, name), record in zip(frames, stored, strict=True):
        results[index] = UploadResult(name, record)
    logger.info("%s inspected %d uploaded image(s)", user, len(stored))
    return [r for r in results if r is not None]


def clean_name(name: str | None) -> str:
    """A client's file name, without any folder part, for messages."""
    return os.path.basename(name or "upload")[:120] or "upload"

"""What the app holds while it runs: the database, the audit log, the live feed, caches and settings."""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from PIL import Image

from flawscope.audit import AuditLog
from flawscope.audit.chain import row_to_record
from flawscope.audit.schema import inspections
from flawscope.audit.schema import settings as settings_table
from flawscope.errors import InputError
from flawscope.line.store import map_path
from flawscope.types import InspectionRecord
from flawscope.web.config import WebConfig
from flawscope.web.database import WebDB
from flawscope.web.imaging import inside_store
from flawscope.web.live import Feed
from flawscope.web.prerender import Prerenderer
from flawscope.web.reviews import ReviewDesk, review_of

logger = logging.getLogger(__name__)
_I = inspections.c
CACHE_ITEMS = 512
REVIEW_ITEMS = 256


class ByteCache:
    """A small thread-safe LRU of rendered pictures (a record's pictures never change)."""

    def __init__(self, size: int = CACHE_ITEMS) -> None:
        self.size = size
        self._items: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self.made = 0  # pictures drawn because they were not cached
        self._lock = threading.Lock()

    def has(self, key: tuple[Any, ...]) -> bool:
        """Whether ``key`` is cached (it stays where it is in the order)."""
        with self._lock:
            return key in self._items

    def get(self, key: tuple[Any, ...], make: Callable[[], bytes]) -> bytes:
        """The cached bytes for ``key``, made (outside the lock) when missing."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        data = make()
        with self._lock:
            self.made += 1
            self._items[key] = data
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return data


@dataclass
class Settings:
    """Settings an engineer changes from the app (kept in ``web_settings``)."""

    sample_rate: float
    categories: list[str]


@dataclass
class PartImage:
    """Where a part's image is and what is known of it."""

    path: Path | None
    width: int = 0
    height: int = 0
    problem: str = ""
    has_map: bool = False


@dataclass
class WebState:
    """Everything a request handler needs (``request.app.state.web``)."""

    config: WebConfig
    db: WebDB
    audit: AuditLog
    desk: ReviewDesk
    feed: Feed
    store_root: Path
    settings: Settings
    inspector: Any = None
    thresholds: list[dict[str, Any]] = field(default_factory=list)
    pictures: ByteCache = field(default_factory=ByteCache)
    # The review page's pictures, drawn ahead of time: kept apart from the dashboard's thumbnails,
    # which turn over every few seconds while the line runs.
    review_pictures: ByteCache = field(default_factory=lambda: ByteCache(REVIEW_ITEMS))
    login_failures: dict[str, list[float]] = field(default_factory=dict)
    prerender: Prerenderer | None = None

    # ------------------------------------------------------------------------------ settings

    @staticmethod
    def load_settings(db: WebDB, config: WebConfig) -> Settings:
        """The saved settings, or the config's values where none were saved."""
        with db.read() as conn:
            saved = {str(k): str(v) for k, v in conn.execute(sa.select(settings_table))}
        rate = float(saved["sample_rate"]) if "sample_rate" in saved else config.sample_rate
        categories = json.loads(saved["categories"]) if "categories" in saved else list(config.categories)
        return Settings(rate, [str(c) for c in categories])

    def save_settings(self, new: Settings) -> None:
        """Store settings and apply them (the feed samples at the new rate from now on)."""
        with self.db.write("web_settings") as conn:
            for key, value in (
                ("sample_rate", repr(new.sample_rate)),
                ("categories", json.dumps(new.categories)),
            ):
                conn.execute(settings_table.delete().where(settings_table.c.key == key))
                conn.execute(settings_table.insert().values(key=key, value=value))
        self.settings = new
        self.feed.sample_rate = new.sample_rate

    def categories(self) -> list[str]:
        """Defect categories offered to reviewers: the configured ones, then those the feed has seen."""
        seen = [c for c, _ in self.feed.categories.most_common(20) if c not in ("good", "defect")]
        merged = list(dict.fromkeys([*self.settings.categories, *seen]))
        return merged or ["defect"]

    # --------------------------------------------------------------------------------- parts

    def record(self, seq: int) -> InspectionRecord | None:
        """Record ``seq`` of any kind, or None."""
        with self.db.read() as conn:
            row = conn.execute(sa.select(inspections).where(_I.seq == seq)).mappings().first()
        return None if row is None else row_to_record(row)

    def history(self, part_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """Every record of a part (inspections, overrides, reviews), oldest first, for people."""
        query = sa.select(inspections).where(_I.part_id == part_id).order_by(_I.seq.desc()).limit(limit)
        with self.db.read() as conn:
            rows = conn.execute(query).mappings().all()
        out = []
        for row in reversed(rows):
            record = row_to_record(row)
            item = {
                "seq": record.seq,
                "kind": record.kind,
                "outcome": record.outcome.value,
                "who": record.operator,
                "at": record.acquired_at,
                "detail": record.reason[:160],
                "mask": "",
                "verdict": "",
                "category": "",
            }
            if record.kind == "review":
                review = review_of(record)
                item["verdict"] = review.verdict
                item["category"] = review.category if review.verdict == "defect" else ""
                item["detail"] = review.note
                item["mask"] = review.mask
            out.append(item)
        return out

    def image_of(self, record: InspectionRecord) -> PartImage:
        """The part's stored image, checked to lie inside the image store, with its size."""
        if not record.image_uri:
            return PartImage(None, problem="No image was stored for this part.")
        try:
            path = inside_store(self.store_root, record.image_uri)
        except InputError:
            return PartImage(None, problem="The image is outside the image store; it is not shown.")
        if not path.is_file():
            return PartImage(None, problem="The image is no longer in the image store.")
        try:
            with Image.open(path) as img:
                width, height = img.size
        except Exception:
            return PartImage(None, problem="The stored image cannot be read.")
        return PartImage(path, width, height, has_map=map_path(path).is_file())


def when(ts: float | None) -> str:
    """Local date and time of a timestamp, for people (``—`` when unknown)."""
    if ts is None or ts != ts:
        return "—"
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")

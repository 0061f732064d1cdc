"""Settings of the web app: one frozen record, checked once (the CLI and the station build it)."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from pathlib import Path

from flawscope.errors import InputError
from flawscope.web.stats import parse_shifts

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class WebConfig:
    """How the web app runs.

    Attributes:
        audit_url: SQLAlchemy URL of the audit database the line writes.
        images: the line's image store (``--store-images``); masks drawn in reviews go there too.
        host: address to listen on; loopback unless deliberately changed.
        port: TCP port (0: any free port).
        bundle: deployable bundle for ``POST /api/v1/inspect`` and the thresholds drawn on the
            score trend (optional).
        station: station name written into the records of parts inspected through the API.
        sample_rate: fraction of passed parts queued for review (the escape-rate sample).
        shifts: local shift start times, ``"06:00,14:00,22:00"``.
        categories: defect categories offered to reviewers (number keys 1-9), besides those in the log.
        secure_cookies: mark the session cookie ``Secure`` (browsers send it over HTTPS and to
            localhost only). Turn off only on a trusted network without TLS.
        session_hours: a login lasts this long (a shift and a bit).
        max_upload_mb: largest image file accepted by the API.
        max_upload_megapixels: largest image accepted (checked before decoding).
        poll_s: seconds between reads of the audit log by the live feed.
        status_file: the running station's status file, for its sinks' live state (connected,
            last error); backlogs come from the audit database either way.
        nice: how many ``nice`` levels below the thread that starts it the web app serves pages
            (Linux, 0-19; 0: the same priority). Its background work runs lower whatever this says:
            the live feed 5 levels below the pages, the pictures drawn ahead at 19.
    """

    audit_url: str
    images: Path
    host: str = LOOPBACK
    port: int = 8080
    bundle: Path | None = None
    station: str = "web"
    sample_rate: float = 0.0
    shifts: str = "06:00,14:00,22:00"
    categories: tuple[str, ...] = field(default_factory=tuple)
    secure_cookies: bool = True
    session_hours: float = 12.0
    max_upload_mb: float = 20.0
    max_upload_megapixels: float = 40.0
    poll_s: float = 1.0
    status_file: Path | None = None
    nice: int = 0

    def checked(self) -> WebConfig:
        """The config, if every value is usable.

        Raises:
            InputError: naming the first unusable setting.
        """
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            if self.host != "localhost":
                raise InputError("host", f"{self.host!r} is not an IP address to listen on") from None
        if not 0 <= self.port <= 65535:
            raise InputError("port", f"must be 0-65535, got {self.port}")
        if not 0 <= self.nice <= 19:
            raise InputError("nice", f"must be 0-19 (Linux CPU priority), got {self.nice}")
        if not 0.0 <= self.sample_rate <= 1.0:
            raise InputError("sample_rate", f"must be a fraction in [0, 1], got {self.sample_rate}")
        parse_shifts(self.shifts)
        for name, value in (
            ("session_hours", self.session_hours),
            ("max_upload_mb", self.max_upload_mb),
            ("max_upload_megapixels", self.max_upload_megapixels),
            ("poll_s", self.poll_s),
        ):
            if not (math.isfinite(value) and value > 0):
                raise InputError(name, f"must be a positive number, got {value}")
        if not self.images.is_dir():
            raise InputError(
                self.images, "image store folder does not exist (give the line's --store-images)"
            )
        if self.bundle is not None and not self.bundle.is_dir():
            raise InputError(self.bundle, "bundle folder does not exist")
        return self

    @property
    def loopback(self) -> bool:
        """Whether the app is reachable from this machine only."""
        return self.host == "localhost" or ipaddress.ip_address(self.host).is_loopback

    @property
    def max_upload_bytes(self) -> int:
        """``max_upload_mb`` in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)

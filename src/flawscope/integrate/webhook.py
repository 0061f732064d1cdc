"""Webhooks to the MES: one signed POST per result, or per batch of results (httpx).

Signed the Standard Webhooks way (https://www.standardwebhooks.com): every request carries
``webhook-id`` (the idempotency key: the result id, or ``batch-<first seq>-<last seq>`` for a batch,
whose items keep their own ``id``), ``webhook-timestamp`` (Unix seconds of this attempt) and
``webhook-signature`` = ``v1,`` + base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}`` keyed with the
secret (``whsec_`` + base64 key bytes). The body is ``{"type", "timestamp", "data"}`` with the
version-1 result message (or a list of them) as ``data``.

Answers: 2xx delivered; 410 Gone disables the endpoint (records go to the dead letters until
``flawscope sink replay``); 408, 429 and 5xx are retried (``Retry-After`` honoured, capped);
401/403/404 are retried too (a configuration problem to fix, not a reason to drop records); any
other 4xx refuses the record for good (dead letter), a batch being split to find which record.
Every request has bounded connect and read timeouts.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import logging
import math
import os
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from flawscope.config import Problem
from flawscope.integrate.payload import dumps, iso_time, place_of, result_id, to_message
from flawscope.integrate.registry import (
    DeliveryError,
    RecordRefused,
    Sink,
    SinkContext,
    SinkDisabled,
    register_sink,
)
from flawscope.types import InspectionRecord

logger = logging.getLogger(__name__)

RETRYABLE = {401, 403, 404, 408, 409, 425, 429}


@dataclass(frozen=True)
class WebhookOptions:
    """``[sink.NAME]`` with ``type = "webhook"``.

    Attributes:
        url: the endpoint (``https://`` in production; ``http://`` is accepted for a local peer).
        secret: the signing secret, ``whsec_`` + base64 (prefer ``secret_env``).
        secret_env: name of the environment variable holding the secret.
        mode: ``single`` (one POST per result) or ``batch`` (up to ``batch_size`` results per POST).
        batch_size: most results per POST in batch mode.
        timeout_s: read/write timeout of a request.
        connect_timeout_s: connection timeout.
        max_retry_after_s: longest ``Retry-After`` honoured.
        ca_file: CA bundle to trust for ``https://`` (default: the system's).
        headers: extra request headers (an API key...).
    """

    url: str
    secret: str = ""
    secret_env: str = ""
    mode: Literal["single", "batch"] = "single"
    batch_size: int = field(default=50, metadata={"min": 1})
    timeout_s: float = field(default=5.0, metadata={"min": 0.01})
    connect_timeout_s: float = field(default=2.0, metadata={"min": 0.01})
    max_retry_after_s: float = field(default=300.0, metadata={"min": 0.0})
    ca_file: Path | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def validate(self) -> list[Problem]:
        """Cross-field checks."""
        problems = []
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(Problem("url", f"must be an http:// or https:// URL, got {self.url!r}"))
        if not self.secret and not self.secret_env:
            problems.append(Problem("secret_env", "webhooks are signed: give secret_env (or secret)"))
        if self.secret:
            try:
                decode_secret(self.secret)
            except ValueError as exc:
                problems.append(Problem("secret", str(exc)))
        return problems


def decode_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_<base64>`` secret.

    Raises:
        ValueError: not that form, or shorter than 24 bytes.
    """
    text = secret.strip()
    if not text.startswith("whsec_"):
        raise ValueError(
            "a webhook secret is 'whsec_' followed by base64 (e.g. from 'openssl rand -base64 32')"
        )
    try:
        key = base64.b64decode(text[len("whsec_") :], validate=True)
    except ValueError:
        raise ValueError("the webhook secret after 'whsec_' is not valid base64") from None
    if len(key) < 24:
        raise ValueError(f"the webhook secret is {len(key)} bytes; use at least 24")
    return key


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256 of id.timestamp.body>``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def verify(key: bytes, headers: dict[str, str], body: bytes, tolerance_s: float = 300.0) -> bool:
    """Check a request's Standard Webhooks signature (for receivers and tests)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        timestamp = int(lowered["webhook-timestamp"])
        expected = sign(key, lowered["webhook-id"], timestamp, body).split(",", 1)[1]
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    given = [s.split(",", 1)[1] for s in lowered.get("webhook-signature", "").split() if s.startswith("v1,")]
    return any(hmac.compare_digest(expected, g) for g in given)


def retry_after(value: str | None, cap: float) -> float | None:
    """Seconds of a ``Retry-After`` header (seconds or an HTTP date), capped; None when absent or bad."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), cap)


def resolve_secret(inline: str, env: str, sink: str) -> str:
    """The secret given inline or through an environment variable.

    Raises:
        DeliveryError: the variable is not set.
    """
    if env:
        value = os.environ.get(env, "")
        if not value:
            raise DeliveryError(f"sink {sink}: environment variable {env} (the secret) is not set")
        return value
    return inline


@register_sink("webhook", config=WebhookOptions, summary="signed HTTP POSTs to an MES (Standard Webhooks)")
class WebhookSink(Sink):
    """POSTs results to an HTTP endpoint, signed, one per request or in batches."""

    def __init__(self, name: str, options: WebhookOptions, context: SinkContext) -> None:
        super().__init__(name, options, context)
        self.place = place_of(context.station.station)
        self._client: Any = None
        self._key = b""
        self.last_status: int | None = None
        self.last_error = ""

    # --------------------------------------------------------------------------- lifecycle

    def open(self) -> None:
        """Create the HTTP client (connections are made per request and kept alive)."""
        import httpx

        try:
            self._key = decode_secret(resolve_secret(self.options.secret, self.options.secret_env, self.name))
        except ValueError as exc:
            raise DeliveryError(f"sink {self.name}: {exc}") from None
        verify_tls: Any = True
        if self.options.ca_file is not None:
            verify_tls = ssl.create_default_context(cafile=str(self.options.ca_file))
        timeout = httpx.Timeout(self.options.timeout_s, connect=self.options.connect_timeout_s)
        self._client = httpx.Client(timeout=timeout, verify=verify_tls, follow_redirects=False)

    def close(self) -> None:
        """Close the client's connections."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def health(self) -> dict[str, Any]:
        """Connected = the last request got an answer other than a 5xx."""
        ok = self.last_status is not None and self.last_status < 500
        return {"connected": ok, "url": self.options.url, "last_status": self.last_status}

    def check(self) -> list[str]:
        """Open a TCP (and TLS) connection to the endpoint's host."""
        parts = urlsplit(self.options.url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        problems = []
        if self.options.secret_env and not os.environ.get(self.options.secret_env):
            problems.append(f"environment variable {self.options.secret_env} (the signing secret) is not set")
        try:
            with socket.create_connection((host, port), timeout=self.options.connect_timeout_s) as sock:
                if parts.scheme == "https":
                    context = ssl.create_default_context(
                        cafile=str(self.options.ca_file) if self.options.ca_file else None
                    )
                    with context.wrap_socket(sock, server_hostname=host):
                        pass
        except ssl.SSLError as exc:
            problems.append(f"{self.options.url}: TLS handshake failed ({exc.reason or exc})")
        except OSError as exc:
            problems.append(f"{self.options.url}: cannot connect to {host}:{port} ({exc.strerror or exc})")
        return problems

    # ---------------------------------------------------------------------------- delivery

    def deliver(self, records: Sequence[InspectionRecord]) -> int:
        """POST the records (one by one, or in batches) and return how many the endpoint took."""
        done = 0
        try:
            if self.options.mode == "single":
                for record in records:
                    self._post_single(record)
                    done += 1
                return done
            size = self.options.batch_size
            while done < len(records):
                chunk = records[done : done + size]
                if self._post_batch(chunk):
                    done += len(chunk)
                    continue
                # The endpoint refused the batch: send its records alone to find the one it refuses.
                for record in chunk:
                    self._post_single(record)
                    done += 1
        except (DeliveryError, SinkDisabled) as exc:
            exc.delivered = done
            raise
        return done

    def _post_single(self, record: InspectionRecord) -> None:
        body = {
            "type": "flawscope.result",
            "timestamp": iso_time(record.acquired_at),
            "data": to_message(record, self.place),
        }
        status = self._post(result_id(record), dumps(body))
        if status is not None:
            raise RecordRefused(record.seq or 0, f"{self.options.url} answered {status}: {self.last_error}")

    def _post_batch(self, records: Sequence[InspectionRecord]) -> bool:
        first, last = records[0], records[-1]
        message_id = f"batch-{first.seq}-{last.seq}-{last.record_hash[:16]}"
        body = {
            "type": "flawscope.result.batch",
            "timestamp": iso_time(last.acquired_at),
            "data": [to_message(r, self.place) for r in records],
        }
        return self._post(message_id, dumps(body)) is None

    def _post(self, message_id: str, body: bytes) -> int | None:
        """One signed POST; None when delivered, the status when the record is refused for good.

        Raises:
            DeliveryError: retry later (network, timeout, 408/429/5xx...).
            SinkDisabled: 410 Gone.
        """
        import httpx

        if self._client is None:
            raise DeliveryError(f"sink {self.name}: not open")
        timestamp = int(time.time())
        headers = {
            **self.options.headers,
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._key, message_id, timestamp, body),
        }
        url = self.options.url
        try:
            response = self._client.post(url, content=body, headers=headers)
        except httpx.TimeoutException:
            self.last_status = None
            self.last_error = f"no answer from {url} within {self.options.timeout_s:g} s"
            raise DeliveryError(f"sink {self.name}: {self.last_error}") from None
        except httpx.HTTPError as exc:
            self.last_status = None
            self.last_error = f"cannot reach {url} ({exc})"
            raise DeliveryError(f"sink {self.name}: {self.last_error}") from None
        status = response.status_code
        self.last_status = status
        if 200 <= status < 300:
            self.last_error = ""
            return None
        text = response.text[:200].strip()
        self.last_error = f"HTTP {status}{': ' + text if text else ''}"
        if status == 410:
            raise SinkDisabled(f"sink {self.name}: {url} answered 410 Gone (endpoint retired)")
        if status >= 500 or status in RETRYABLE:
            wait = retry_after(response.headers.get("retry-after"), self.options.max_retry_after_s)
            hint = {401: " (signature or credentials refused)", 403: " (forbidden)", 404: " (wrong URL?)"}
            raise DeliveryError(
                f"sink {self.name}: {url} answered {status}{hint.get(status, '')}"
                f"{f'; retry after {wait:g} s' if wait is not None else ''}",
                retry_after_s=wait,
            )
        logger.debug("sink %s: %s refused message %s", self.name, url, message_id)
        return status

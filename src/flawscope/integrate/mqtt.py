"""MQTT (paho-mqtt 2.x): one JSON message per result, QoS 1, counted delivered only after the PUBACK.

Results go to an ISA-95-style topic, by default ``{enterprise}/{site}/{line}/{station}/flawscope/result``
(``{area}`` and ``{camera}`` may be used too), as the version-1 message of
:mod:`flawscope.integrate.payload` (schema file ``flawscope/integrate/schemas/result-v1.schema.json``).
The station's state is a retained message on the status topic: ``online`` when connected, and
``offline`` as the broker's last will when the station vanishes (or when it closes cleanly).

paho keeps messages that await their PUBACK in memory only; the audit log is the durability. When
the connection breaks, the client is dropped with whatever it held, and the forwarder re-delivers
from its cursor over a new connection (same ``id`` s).
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import string
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from flawscope.config import Problem
from flawscope.integrate.payload import SCHEMA_VERSION, camera_of, dumps, place_of, to_message
from flawscope.integrate.registry import DeliveryError, Sink, SinkContext, register_sink
from flawscope.types import InspectionRecord

logger = logging.getLogger(__name__)

PLACEHOLDERS = {"enterprise", "site", "area", "line", "station", "camera"}
#: CONNACK reason codes a user can do something about.
_REFUSALS = {
    4: "bad user name or password",
    5: "not authorised (user name or password refused, or no access)",
    134: "bad user name or password",
    135: "not authorised (user name or password refused, or no access)",
}


@dataclass(frozen=True)
class MqttOptions:
    """``[sink.NAME]`` with ``type = "mqtt"``.

    Attributes:
        host: broker host.
        port: broker port (1883 plain, 8883 TLS by convention).
        topic: result topic; placeholders ``{enterprise} {site} {area} {line} {station} {camera}``.
        status_topic: retained online/offline topic (the last will).
        qos: 1 (at least once) or 2.
        client_id: MQTT client id (default ``flawscope-<station>-<sink>``).
        username: user name.
        password: password (prefer ``password_env``).
        password_env: environment variable holding the password.
        tls: connect with TLS.
        ca_file: CA certificate(s) the broker's certificate must chain to (default: the system's).
        cert_file: client certificate (mutual TLS).
        key_file: the client certificate's key.
        keepalive_s: MQTT keep-alive.
        timeout_s: how long to wait for the connection and for PUBACKs.
        max_inflight: messages awaiting their PUBACK at once.
    """

    host: str = "127.0.0.1"
    port: int = field(default=1883, metadata={"min": 1, "max": 65535})
    topic: str = "{enterprise}/{site}/{line}/{station}/flawscope/result"
    status_topic: str = "{enterprise}/{site}/{line}/{station}/flawscope/status"
    qos: Literal[1, 2] = 1
    client_id: str = ""
    username: str = ""
    password: str = ""
    password_env: str = ""
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = field(default=30, metadata={"min": 5})
    timeout_s: float = field(default=10.0, metadata={"min": 0.1})
    max_inflight: int = field(default=100, metadata={"min": 1})

    def validate(self) -> list[Problem]:
        """Cross-field checks: topics, TLS files."""
        problems = []
        for name in ("topic", "status_topic"):
            value = getattr(self, name)
            fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
            unknown = fields - PLACEHOLDERS
            if unknown:
                problems.append(
                    Problem(
                        name,
                        f"unknown placeholder {sorted(unknown)[0]!r} "
                        f"(known: {', '.join(sorted(PLACEHOLDERS))})",
                    )
                )
            if "+" in value or "#" in value or not value.strip("/"):
                problems.append(Problem(name, f"{value!r} is not a topic one can publish to"))
        if (self.cert_file is None) != (self.key_file is None):
            problems.append(Problem("key_file", "cert_file and key_file go together"))
        if not self.tls and any(f is not None for f in (self.ca_file, self.cert_file)):
            problems.append(Problem("tls", "ca_file/cert_file are given but tls = false"))
        return problems


@register_sink("mqtt", config=MqttOptions, summary="JSON per result to an MQTT broker, QoS 1 after PUBACK")
class MqttSink(Sink):
    """Publishes each result to an MQTT broker and waits for the broker's acknowledgement."""

    def __init__(self, name: str, options: MqttOptions, context: SinkContext) -> None:
        super().__init__(name, options, context)
        self.place = place_of(context.station.station)
        self.client_id = options.client_id or f"flawscope-{self.place['station']}-{name}"
        self.status_topic = options.status_topic.format(**self.place, camera="")
        self._client: Any = None
        self._connected = threading.Event()
        self._connack: threading.Event = threading.Event()
        self._refusal = ""
        self.last_error = ""

    def topic(self, record: InspectionRecord) -> str:
        """The result topic of a record."""
        return self.options.topic.format(**self.place, camera=camera_of(record))

    def _status(self, state: str) -> bytes:
        return dumps(
            {
                "state": state,
                "station": self.place["station"],
                "at": time.time(),
                "schema_version": SCHEMA_VERSION,
            }
        )

    # --------------------------------------------------------------------------- lifecycle

    def _new_client(self) -> Any:
        import paho.mqtt.client as mqtt

        opts = self.options
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.max_inflight_messages_set(opts.max_inflight)
        password = os.environ.get(opts.password_env, "") if opts.password_env else opts.password
        if opts.username:
            client.username_pw_set(opts.username, password or None)
        if opts.tls:
            client.tls_set(
                ca_certs=str(opts.ca_file) if opts.ca_file else None,
                certfile=str(opts.cert_file) if opts.cert_file else None,
                keyfile=str(opts.key_file) if opts.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        client.will_set(self.status_topic, self._status("offline"), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        return client

    def _on_connect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        code = int(getattr(reason, "value", reason))
        if code == 0:
            self._refusal = ""
            self._connected.set()
        else:
            self._refusal = _REFUSALS.get(code, str(reason))
        self._connack.set()

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if self._connected.is_set():
            logger.warning(
                "sink %s: disconnected from %s:%s (%s)",
                self.name,
                self.options.host,
                self.options.port,
                reason,
            )
        self._connected.clear()

    def open(self) -> None:
        """Connect, wait for the CONNACK and publish the retained ``online`` status.

        Raises:
            DeliveryError: broker unreachable, TLS refused, credentials refused, no CONNACK in time.
        """
        opts = self.options
        where = f"sink {self.name}: broker {opts.host}:{opts.port}"
        self._connected.clear()
        self._connack.clear()
        try:
            client = self._new_client()
        except (OSError, ValueError, ssl.SSLError) as exc:
            raise DeliveryError(f"{where}: cannot set up TLS ({exc})") from None
        try:
            client.connect(opts.host, opts.port, keepalive=opts.keepalive_s)
        except ssl.SSLCertVerificationError as exc:
            raise DeliveryError(
                f"{where}: the broker's certificate is not trusted ({exc.verify_message})"
            ) from None
        except ssl.SSLError as exc:
            raise DeliveryError(f"{where}: TLS handshake failed ({exc.reason or exc})") from None
        except OSError as exc:
            raise DeliveryError(f"{where}: cannot connect ({exc.strerror or exc})") from None
        client.loop_start()
        self._client = client
        if not self._connack.wait(opts.timeout_s) or not self._connected.is_set():
            refusal = self._refusal or f"no answer within {opts.timeout_s:g} s"
            self.close(clean=False)
            raise DeliveryError(f"{where}: connection refused: {refusal}")
        client.publish(self.status_topic, self._status("online"), qos=1, retain=True)
        self.last_error = ""

    def close(self, clean: bool = True) -> None:
        """Publish ``offline`` (when still connected) and disconnect."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if clean and self._connected.is_set():
                info = client.publish(self.status_topic, self._status("offline"), qos=1, retain=True)
                info.wait_for_publish(min(2.0, self.options.timeout_s))
            client.disconnect()
        except Exception as exc:  # closing must not fail
            logger.debug("sink %s: disconnect: %s", self.name, exc)
        finally:
            client.loop_stop()
            self._connected.clear()

    def health(self) -> dict[str, Any]:
        """Connected to the broker?"""
        return {"connected": self._connected.is_set(), "broker": f"{self.options.host}:{self.options.port}"}

    def check(self) -> list[str]:
        """Certificate files, then connect with the configured TLS and credentials, and disconnect."""
        from flawscope.integrate.certs import check_certificate

        opts = self.options
        problems = []
        if opts.ca_file is not None:
            problems += check_certificate(opts.ca_file, what="the broker CA certificate")
        if opts.cert_file is not None:
            problems += check_certificate(opts.cert_file, what="the client certificate", key=opts.key_file)
        if opts.password_env and not os.environ.get(opts.password_env):
            problems.append(f"environment variable {opts.password_env} (the broker password) is not set")
        if problems:
            return problems
        probe = MqttSink(self.name, self.options, self.context)
        probe.client_id = f"{self.client_id}-check"
        try:
            probe.open()
        except DeliveryError as exc:
            return [str(exc).removeprefix(f"sink {self.name}: ")]
        finally:
            probe.close()
        return []

    # ---------------------------------------------------------------------------- delivery

    def deliver(self, records: Sequence[InspectionRecord]) -> int:
        """Publish the records in order and wait for every PUBACK; return how many were acknowledged."""
        client = self._client
        where = f"sink {self.name}: broker {self.options.host}:{self.options.port}"
        if client is None or not self._connected.is_set():
            raise DeliveryError(f"{where}: not connected")
        infos = []
        for record in records:
            info = client.publish(
                self.topic(record), dumps(to_message(record, self.place)), qos=self.options.qos
            )
            if info.rc != 0:
                break
            infos.append(info)
        deadline = time.monotonic() + self.options.timeout_s
        acked = 0
        for info in infos:
            while not info.is_published():
                if not self._connected.is_set():
                    raise DeliveryError(f"{where}: connection lost before the PUBACK", delivered=acked)
                if time.monotonic() > deadline:
                    raise DeliveryError(
                        f"{where}: no PUBACK within {self.options.timeout_s:g} s", delivered=acked
                    )
                try:
                    info.wait_for_publish(0.05)
                except (RuntimeError, ValueError) as exc:
                    raise DeliveryError(f"{where}: publish failed ({exc})", delivered=acked) from None
            acked += 1
        if acked < len(records):
            raise DeliveryError(f"{where}: connection lost while publishing", delivered=acked)
        return acked


def parse_status(payload: bytes) -> dict[str, Any]:
    """The retained status message (for consumers and tests)."""
    data = json.loads(payload)
    return data if isinstance(data, dict) else {}

"""Real protocol peers for the integration tests and benchmarks, on 127.0.0.1 with random free ports.

- :class:`Mosquitto`: the Debian ``mosquitto`` broker (password file, optional TLS listener);
- :class:`MqttCollector`: a paho subscriber with a persistent session that records every message;
- :class:`WebhookReceiver`: an HTTP server that checks Standard Webhooks signatures and records
  every delivery, with scriptable answers (status codes, Retry-After, hangs).

Each can be stopped and started again on the same port (to cut a peer mid-stream).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


# ----------------------------------------------------------------------------------- MQTT


class Mosquitto:
    """A mosquitto broker on 127.0.0.1 with user ``line``/``secret-pw`` (anonymous refused)."""

    USER = "line"
    PASSWORD = "secret-pw"

    def __init__(self, folder: Path, tls: dict[str, Path] | None = None) -> None:
        if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
            raise RuntimeError("the Debian package mosquitto is not installed")
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        passwords = folder / "passwords"
        passwords.write_text("")
        subprocess.run(
            ["mosquitto_passwd", "-b", str(passwords), self.USER, self.PASSWORD],
            check=True,
            capture_output=True,
        )
        passwords.chmod(0o600)
        lines = [
            # Run as root (the test runner's user) it would drop to user "mosquitto", who cannot
            # read the test's private folders.
            *(["user root"] if os.geteuid() == 0 else []),
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {passwords}",
            "persistence true",
            f"persistence_location {folder}/",
            "autosave_interval 1",
            "max_queued_messages 100000",
            f"listener {self.port} 127.0.0.1",
        ]
        if tls:
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {tls['ca']}",
                f"certfile {tls['cert']}",
                f"keyfile {tls['key']}",
            ]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = folder / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Mosquitto:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=log)
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class MqttCollector:
    """Subscribes to ``topic`` (QoS 1, persistent session) and keeps every message it gets."""

    def __init__(self, port: int, topic: str = "#", client_id: str = "collector") -> None:
        import paho.mqtt.client as mqtt

        self.topic = topic
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        self.client.username_pw_set(Mosquitto.USER, Mosquitto.PASSWORD)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 1)
        self.subscribed = threading.Event()
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, client: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if int(getattr(reason, "value", reason)) == 0:
            client.subscribe(self.topic, qos=1)
            self.subscribed.set()

    def _on_message(self, _client: Any, _u: Any, message: Any) -> None:
        with self.lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def results(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith("/flawscope/result")]

    def wait_for(self, predicate: Callable[[MqttCollector], bool], timeout_s: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return predicate(self)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# ------------------------------------------------------------------------------- webhooks


class WebhookReceiver:
    """An HTTP endpoint on 127.0.0.1 that records signed deliveries.

    ``answer`` decides each reply: ``answer(n, body) -> (status, headers)`` for the n-th request
    (default: 200). ``delay_s`` makes every request hang that long first.
    """

    def __init__(self, key: bytes, port: int | None = None) -> None:
        self.key = key
        self.port = port or free_port()
        self.requests: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.aborted = 0  # requests whose sender went away before the whole body arrived
        self.answer: Callable[[int, dict[str, Any]], tuple[int, dict[str, str]]] = lambda n, body: (200, {})
        self.delay_s = 0.0
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                pass

            def do_POST(self) -> None:
                from flawscope.integrate.webhook import verify

                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                if len(raw) < length:
                    # The sender died mid-request (the soak test SIGKILLs the station): an HTTP
                    # server never hands a cut body to the application, so neither do we.
                    with receiver.lock:
                        receiver.aborted += 1
                    self.close_connection = True
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                ok = verify(receiver.key, headers, raw)
                body = json.loads(raw) if raw else {}
                # Kept in arrival order; the answer (and a possible hang) come after.
                request = {"id": headers.get("webhook-id"), "body": body, "status": 0, "at": time.monotonic()}
                with receiver.lock:
                    n = len(receiver.requests)
                    receiver.requests.append(request)
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                with receiver.lock:
                    status, extra = receiver.answer(n, body) if ok else (401, {})
                    if not ok:
                        receiver.bad_signatures += 1
                    request["status"] = status
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("content-length", "0")
                self.end_headers()

        return Handler

    def start(self) -> WebhookReceiver:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        self.server = server
        self.thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def delivered(self) -> list[dict[str, Any]]:
        """Result messages of every accepted (2xx) request, in arrival order."""
        with self.lock:
            out = []
            for request in self.requests:
                if not 200 <= request["status"] < 300:
                    continue
                data = request["body"].get("data")
                out.extend(data if isinstance(data, list) else [data])
            return out

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/results"

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

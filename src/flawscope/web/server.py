"""Running the web app: in the foreground (``flawscope serve``) or in a thread beside a station.

uvicorn serves the app on one event loop; request handlers that read the database run in its
thread pool. The app listens on 127.0.0.1 unless another address is configured, and says so.

The thread that runs uvicorn can lower its own CPU priority (``WebConfig.nice``, default 0: the
pages a person waits for are served at the caller's priority) before it starts; on Linux every
thread it creates (the event loop's worker threads, the live feed) inherits it. The live feed
runs 5 levels lower still and the pictures drawn ahead at nice 19 (:mod:`flawscope.web.priority`).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import uvicorn

from flawscope.errors import InputError
from flawscope.web.app import create_app
from flawscope.web.config import WebConfig
from flawscope.web.live import SinkStatus
from flawscope.web.priority import lower_priority

logger = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn's server, ending the dashboards' event streams first when it shuts down.

    An event stream never ends by itself, so uvicorn would wait out its graceful-shutdown time
    and then cancel it; ending the live feed first lets every stream finish within a second.
    """

    def __init__(self, config: uvicorn.Config, feed: Any) -> None:
        super().__init__(config)
        self.feed = feed

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop the streams, then shut down as uvicorn does."""
        self.feed.begin_stop()
        await super().shutdown(sockets)


def _server(config: WebConfig, sinks: SinkStatus | None) -> uvicorn.Server:
    app = create_app(config, sinks=sinks)
    if not config.loopback:
        logger.warning(
            "the web app listens on %s: other computers can reach it%s",
            config.host,
            "" if config.secure_cookies else ", and its session cookie is sent without TLS",
        )
    settings = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=3,
        server_header=False,
        proxy_headers=False,
    )
    return _Server(settings, app.state.web.feed)


def serve(config: WebConfig, *, sinks: SinkStatus | None = None) -> None:
    """Serve the app until interrupted (Ctrl-C, SIGTERM), at the configured CPU priority.

    Raises:
        InputError: an unusable setting, database, image store or bundle, or a port in use.
    """
    _check_port(config)
    lower_priority(config.nice)  # before the app or uvicorn starts any thread: they all inherit it
    _server(config, sinks).run()


def _check_port(config: WebConfig) -> None:
    if config.port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((config.host, config.port))
        except OSError as exc:
            raise InputError(
                f"{config.host}:{config.port}", f"cannot listen there ({exc.strerror})"
            ) from None


@dataclass
class RunningServer:
    """A web app serving in a background thread; ``stop()`` ends it."""

    server: uvicorn.Server
    thread: threading.Thread

    @property
    def url(self) -> str:
        """Base URL of the app, e.g. ``http://127.0.0.1:8080``."""
        sockets = [s for srv in getattr(self.server, "servers", []) for s in srv.sockets]
        host, port = (
            sockets[0].getsockname()[:2] if sockets else (self.server.config.host, self.server.config.port)
        )
        return f"http://{host}:{port}"

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving and wait for the thread to end."""
        self.server.should_exit = True
        self.thread.join(timeout_s)


def start_server(
    config: WebConfig, *, sinks: SinkStatus | None = None, timeout_s: float = 30.0
) -> RunningServer:
    """Start the app in a background thread (what ``flawscope station run`` does for a ``[web]`` section).

    A station passes its sinks' live states, e.g.
    ``sinks=lambda: [dataclasses.asdict(f.status()) for f in forwarders]`` (each a mapping with at
    least ``name``, ``state``, ``backlog`` and ``last_error``); without it the dashboard reads the
    sink cursors in the audit database.

    Args:
        config: the app's settings.
        sinks: where the dashboard reads the station's sink states from.
        timeout_s: how long to wait for the app to listen.

    Raises:
        InputError: an unusable setting, or the app did not start listening in time.
    """
    _check_port(config)
    server = _server(config, sinks)

    def run() -> None:
        lower_priority(config.nice)  # this thread and those it starts; the station's stay as they are
        server.run()

    thread = threading.Thread(target=run, name="flawscope-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise InputError(f"{config.host}:{config.port}", "the web app did not start; see the log")
        time.sleep(0.05)
    running = RunningServer(server, thread)
    logger.info("web app at %s", running.url)
    return running

"""Fixtures of the integration tests: station files, certificates and real peers on 127.0.0.1.

The helper modules beside this file (``factory_helpers``, ``factory_peers``) are importable by the
tests (and by ``benchmarks/factory.py``): this folder is put on ``sys.path``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from factory_helpers import write_station

from flawscope.config import StationConfig, load_config


@pytest.fixture
def station_file(tmp_path: Path):
    def make(
        sinks: str = "", cameras: Sequence[str] = ("top",), extra: str = "", camera_extra: str = ""
    ) -> StationConfig:
        return load_config(write_station(tmp_path, sinks, cameras, extra, camera_extra))

    return make


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A CA, a server certificate for 127.0.0.1 signed by it, and an untrusted self-signed one."""
    from flawscope.integrate.certs import make_ca, make_certificate

    folder = tmp_path_factory.mktemp("certs")
    ca = make_ca(folder)
    server = make_certificate(folder, "server", common_name="127.0.0.1", ca=ca)
    rogue = make_certificate(folder, "rogue", common_name="127.0.0.1")
    return SimpleNamespace(folder=folder, ca=ca, server=server, rogue=rogue)


@pytest.fixture
def mosquitto(tmp_path: Path, certs: SimpleNamespace):
    from factory_peers import Mosquitto

    try:
        broker = Mosquitto(
            tmp_path / "broker", tls={"ca": certs.ca.cert, "cert": certs.server.cert, "key": certs.server.key}
        )
    except (RuntimeError, FileNotFoundError) as exc:
        pytest.skip(f"mosquitto broker unavailable: {exc} (apt-get install mosquitto)")
    broker.start()
    yield broker
    broker.stop()

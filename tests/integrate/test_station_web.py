"""A station.toml with a ``[web]`` table: ``Station.run`` serves the operators' web app beside the line."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from factory_helpers import ArraySource, fake_loader

from flawscope.config import ConfigError, load_config
from flawscope.station import Station
from flawscope.station.check import check_station

pytest.importorskip("fastapi")


def station_toml(tmp_path: Path, web: str, store_images: bool = True) -> Path:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    config = tmp_path / "station.toml"
    config.write_text(
        f"""
[station]
name = "press-7"
audit = "sqlite:///audit.db"
{'store_images = "images"' if store_images else ""}

[[camera]]
name = "top"
source = "test://arrays"
bundle = "unused"

[sink.mes]
type = "webhook"
url = "http://127.0.0.1:9/never"
secret = "whsec_dGVzdC1zZWNyZXQtb2YtMzItYnl0ZXMtZm9yLW1lISE="

{web}
"""
    )
    return config


def test_a_web_table_starts_the_app_beside_the_line_and_stops_it_after(tmp_path: Path) -> None:
    from flawscope.web.database import WebDB
    from flawscope.web.users import create_token, create_user

    loaded = load_config(station_toml(tmp_path, "[web]\nport = 0\nsample_rate = 0.1\nsecure_cookies = false"))
    assert loaded.web is not None
    assert loaded.web.audit_url == loaded.station.audit  # the app reads what the line writes
    assert loaded.web.images == tmp_path / "images"
    assert loaded.web.status_file == loaded.status_path
    assert loaded.web.station == "press-7/web"
    db = WebDB(loaded.station.audit)
    try:
        create_user(db, "olga", "a long enough password", "operator", created_by="test")
        token = create_token(db, "olga", "test")[0]
    finally:
        db.close()

    seen: dict[str, object] = {}
    station = Station(loaded, inspector_loader=fake_loader, sources={"top": ArraySource(40, rate=20.0)})

    def look(_status: object) -> None:
        if "sinks" in seen or station.web is None:
            return
        with httpx.Client(base_url=station.web.url, timeout=10) as client:
            seen["health"] = client.get("/healthz").status_code
            seen["anonymous"] = client.get("/api/v1/sinks").status_code
            answer = client.get("/api/v1/sinks", headers={"authorization": f"Bearer {token}"})
            seen["sinks"] = answer.json() if answer.status_code == 200 else answer.status_code
        seen["url"] = station.web.url

    with station:
        summary = station.run(on_status=look, drain_s=0.5)
        assert station.web is None  # stopped with the line
    assert summary.cameras["top"].recorded == 40
    assert seen["health"] == 200
    assert seen["anonymous"] == 401
    sinks = seen["sinks"]
    assert isinstance(sinks, list) and [s["name"] for s in sinks] == ["mes"]  # the live forwarder's state
    assert str(seen["url"]).startswith("http://127.0.0.1:")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{seen['url']}/healthz", timeout=2)


def test_web_table_problems_are_named_with_their_lines(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(station_toml(tmp_path, "[web]\nport = 0", store_images=False))
    assert "web: the web app shows the stored images: set store_images in [station]" in str(caught.value)

    with pytest.raises(ConfigError) as caught:
        load_config(station_toml(tmp_path, '[web]\nport = "eighty"\nimages = "elsewhere"'))
    text = str(caught.value)
    assert "web.port: must be a whole number" in text
    assert "web.images: unknown key" in text  # the image store is the station's


def test_station_check_reports_an_unusable_web_setting(tmp_path: Path) -> None:
    config = station_toml(tmp_path, '[web]\nhost = "not-an-address"')
    _loaded, problems = check_station(config, reach_peers=False)
    web = [p for p in problems if p.where == "web"]  # (the camera's bundle is missing too)
    assert len(web) == 1 and "not an IP address" in web[0].message
    assert web[0].line is not None

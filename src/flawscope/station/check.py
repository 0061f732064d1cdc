"""``flawscope station check``: everything that can be checked before a station runs, all at once.

Beyond what reading the file checks (:func:`flawscope.config.load_config`), this opens each
camera's bundle and source, opens the audit store's URL, and asks each sink to reach its peer
(broker credentials, TLS certificates, the PLC's node ids...). Every problem names the camera or
sink and the line of its table.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flawscope.config import ConfigError, Problem, StationConfig, key_lines, load_config
from flawscope.errors import FlawscopeError

logger = logging.getLogger(__name__)


def check_station(
    path: str | Path, *, reach_peers: bool = True
) -> tuple[StationConfig | None, list[Problem]]:
    """Check a station file and what it names.

    Args:
        path: the ``station.toml``.
        reach_peers: also connect to the sinks' peers (brokers, endpoints, PLCs).

    Returns:
        The configuration (None when the file itself has problems) and every problem found.
    """
    try:
        config = load_config(path)
    except ConfigError as exc:
        return None, list(exc.problems)
    try:
        lines = key_lines(config.path.read_text(encoding="utf-8"))
    except OSError:
        lines = {}
    problems: list[Problem] = []
    problems += _check_audit(config, lines)
    for index, camera in enumerate(config.cameras):
        where = f"camera[{index}] ({camera.name})"
        line = lines.get(("camera", index))
        problems += [Problem(where, p, line) for p in _check_camera(config, index)]
    if config.web is not None:
        try:
            config.web.checked()
        except FlawscopeError as exc:
            problems.append(Problem("web", str(exc), lines.get(("web",))))
    if reach_peers:
        from flawscope.integrate.registry import SinkContext, make_sink

        for sink_config in config.sinks:
            if not sink_config.enabled:
                continue
            try:
                sink = make_sink(SinkContext(config, sink_config, None, config.station.audit))
                found = sink.check()
            except Exception as exc:  # a check must report, never crash
                logger.exception("sink %s: check failed", sink_config.name)
                found = [f"the check itself failed: {exc}"]
            line = lines.get(("sink", sink_config.name))
            problems += [Problem(f"sink.{sink_config.name}", p, line) for p in found]
    return config, problems


def _check_audit(config: StationConfig, lines: dict[tuple[str | int, ...], int]) -> list[Problem]:
    from flawscope.audit.schema import parse_url

    line = lines.get(("station", "audit")) or lines.get(("station",))
    try:
        parse_url(config.station.audit)
    except FlawscopeError as exc:
        return [Problem("station.audit", str(exc), line)]
    return []


def _check_camera(config: StationConfig, index: int) -> list[str]:
    from flawscope.acquire import open_source
    from flawscope.station.runner import load_inspector

    camera = config.cameras[index]
    problems = []
    try:
        load_inspector(camera)
    except FlawscopeError as exc:
        problems.append(f"bundle: {exc}")
    try:
        source = open_source(camera.source)
    except FlawscopeError as exc:
        problems.append(f"source: {exc}")
    else:
        source.close()
    return problems

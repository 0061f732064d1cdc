"""Chromium's CPU and time per page action of the web app, one browser, no line running.

A small station (120 generated parts, tests/web's fixtures) is served on 127.0.0.1; Debian's
Chromium, driven by Playwright, logs in, warms up, then clicks through review page, parts list,
a part and the dashboard ``--cycles`` times. Prints (and writes to ``--out``) Chromium's CPU
milliseconds per action (all its processes, from /proc) and the actions' wall times, timed as
benchmarks/web.py times them. To compare two versions of the app, run it with each on PYTHONPATH,
one after the other:

    PYTHONPATH=OLD/src python benchmarks/web_actions.py --out /tmp/old.json
    PYTHONPATH=src python benchmarks/web_actions.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def drive(web: Any, base: str, password: str, cycles: int) -> tuple[dict[str, list[float]], float, float]:
    """Log in, warm up, then time ``cycles`` rounds of page actions; Chromium CPU seconds, wall s."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=web.CHROMIUM, args=web.ARGS)
        page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
        page.goto(base + "/login")
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", password)
        page.keyboard.press("Enter")
        page.wait_for_url(base + "/")
        links = {
            "review page": "nav a[href='/review']",
            "parts list": "nav a[href='/inspections']",
            "part page": "table.data a",
            "dashboard": "nav a[href='/']",
        }
        times: dict[str, list[float]] = {k: [] for k in links}

        def act(name: str, keep: bool = True) -> None:
            spent = web.timed(page, page.locator(links[name]).first.click)
            if keep:
                times[name].append(spent)

        for _ in range(2):  # warm: every page once, caches filled
            for name in links:
                act(name, keep=False)
        time.sleep(1)
        me = os.getpid()
        cpu_before, started = web.cpu_seconds([me], ("chrom",)), time.perf_counter()
        for _ in range(cycles):
            for name in links:
                act(name)
        wall = time.perf_counter() - started
        time.sleep(0.5)  # the last action's work reaches /proc
        cpu = web.cpu_seconds([me], ("chrom",)) - cpu_before
        browser.close()
    return times, cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=12)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "web-actions.json")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent))
    from tests.web.conftest import PASSWORD, add_users, make_station, serve

    spec = importlib.util.spec_from_file_location("bench_web", HERE / "web.py")
    assert spec is not None and spec.loader is not None
    web = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(web)
    station = make_station(Path(tempfile.mkdtemp(prefix="flawscope-web-actions-")) / "st", n=120)
    add_users(station.url)
    for served in serve(station, categories=("scratch", "dent", "stain")):
        times, cpu, wall = drive(web, served.url, PASSWORD, args.cycles)
    actions = sum(len(v) for v in times.values())
    report = {
        "actions": actions,
        "chromium_cpu_ms_per_action": round(cpu / actions * 1000, 1),
        "wall_s": round(wall, 1),
        "p50_ms": {k: round(float(np.percentile(v, 50)), 1) for k, v in times.items()},
        "p95_ms": {k: round(float(np.percentile(v, 95)), 1) for k, v in times.items()},
        "load_avg": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


if __name__ == "__main__":
    main()

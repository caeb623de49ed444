"""The maintenance screens on a fleet of 1000 gateways: server time of the overview and of a
site page (p50/p99), and the bytes a browser downloads for a first view of the overview
(the page and every script, style and icon it loads) and for one live refresh of it, when
nothing changed (a 304 to its ETag) and when something did (the fragment).

The fleet is bench.fleet_api's (100 sites × 10 gateways × 5 devices, alarms on a tenth of
the gateways), served by ``fleet serve`` in a process of its own; this process logs in as a
person would and asks over real TCP, one request at a time, after a warm-up. SQLite, and
PostgreSQL when Debian's is installed. Targets (issue 13): p99 <= 100 ms, first view <= 300
kB, a refresh <= 10 kB when nothing changed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import tempfile
import time
from pathlib import Path

import httpx

from bench.fleet_api import (
    GATEWAYS_PER_SITE,
    PASSWORD,
    SITES,
    percentile,
    postgres_missing,
    seed,
    serve,
    stop,
)
from bench.report import write_result

NAME = "fleet_pages"
REQUESTS, WARM_UP = 100, 5
ASSET = re.compile(r'(?:src|href)="(/(?:static|vendor)/[^"]+)"')


def timed(client: httpx.Client, paths: list[str]) -> list[float]:
    """Milliseconds per page, after WARM_UP unmeasured ones."""
    took = []
    for i in range(WARM_UP + REQUESTS):
        started = time.perf_counter()
        answer = client.get(paths[i % len(paths)])
        elapsed = (time.perf_counter() - started) * 1000
        answer.raise_for_status()
        if i >= WARM_UP:
            took.append(elapsed)
    return took


def wire_bytes(answer: httpx.Response) -> int:
    """What the answer weighs on the wire: status line, headers and body."""
    head = 17 + sum(len(k) + len(v) + 4 for k, v in answer.headers.raw) + 2
    return head + len(answer.content)


def measure(url: str, label: str) -> dict[str, float]:
    asyncio.run(seed(url))
    server, base = serve(url)
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            client.post("/api/login", json={"name": "bench", "password": PASSWORD})
            page = client.get("/")
            page.raise_for_status()
            first_view = wire_bytes(page) + sum(
                wire_bytes(client.get(asset)) for asset in sorted(set(ASSET.findall(page.text)))
            )
            live = client.get("/?live=1")
            unchanged = client.get("/?live=1", headers={"If-None-Match": live.headers["etag"]})
            if unchanged.status_code != 304:
                raise RuntimeError(f"a refresh of an unchanged overview got {unchanged}")
            overview = timed(client, ["/"])
            sites = [f"/sites/site-{s:03d}" for s in range(0, SITES, 7)]
            site = timed(client, sites)
    finally:
        stop(server)
    return {
        f"overview_p50_ms_{label}": percentile(overview, 0.5),
        f"overview_p99_ms_{label}": percentile(overview, 0.99),
        f"site_p50_ms_{label}": percentile(site, 0.5),
        f"site_p99_ms_{label}": percentile(site, 0.99),
        f"first_view_bytes_{label}": float(first_view),
        f"refresh_unchanged_bytes_{label}": float(wire_bytes(unchanged)),
        f"refresh_changed_bytes_{label}": float(wire_bytes(live)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_pages", description=__doc__)
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()
    metrics: dict[str, float] = {"gateways": float(SITES * GATEWAYS_PER_SITE)}
    with tempfile.TemporaryDirectory(prefix="doorstep-bench-") as tmp:
        metrics |= measure(f"sqlite:///{Path(tmp) / 'fleet.db'}", "sqlite")
    missing = "--no-postgres given" if args.no_postgres else postgres_missing()
    if missing is None:
        from hil_tests.postgres import PostgresServer

        with PostgresServer() as pg:
            metrics |= measure(pg.fresh_database(), "postgresql")
    else:
        print(f"PostgreSQL left out: {missing}")
    metrics["load_1min"] = os.getloadavg()[0]
    write_result(
        NAME,
        metrics,
        targets={
            "overview_p99_ms_*": "<= 100", "site_p99_ms_*": "<= 100",
            "first_view_bytes_*": "<= 300000", "refresh_unchanged_bytes_*": "<= 10000",
        },
        units={"*_ms_*": "ms", "*_bytes_*": "bytes", "load_1min": "load average"},
    )  # fmt: skip


if __name__ == "__main__":
    main()

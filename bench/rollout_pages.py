"""The release and rollout screens on a fleet of 1000 gateways: server time (p50/p99) of
/releases (which version each of the 1000 gateways runs), /rollouts, and the page of one
rollout over all 1000 (its first phase, 500 gateways, commanded by the fleet's own driver,
those offline waiting), and the bytes of one live refresh of that page, unchanged (a 304) and whole.

The fleet is bench.fleet_api's (100 sites × 10 gateways), each gateway with an OTA status
saying it runs 1.4.0 and a tag the rollout selects; ``fleet serve`` runs it in a process of
its own, its rollout driver included; this process logs in as a person would and asks over
real TCP, one request at a time, after a warm-up. SQLite, and PostgreSQL when Debian's is
installed. The screens share issue 13's target for a page: p99 <= 100 ms; a refresh when
nothing changed <= 10 kB.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import insert, select

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
from bench.fleet_pages import timed, wire_bytes
from bench.report import write_result
from fleet.config.tables import GatewayTag
from fleet.core.db import open_database
from fleet.models import Gateway, utcnow
from fleet.releases.tables import GatewayOta, Release

NAME = "rollout_pages"
TAG = "bench"
COMMANDED_TIMEOUT_S = 90.0  # the driver steps once a second; a loaded machine is slower


async def seed_releases(url: str) -> None:
    """A release 1.5.0, and every gateway's OTA status (it runs 1.4.0) and tag."""
    engine = await open_database(url)
    try:
        async with engine.begin() as conn:
            ids = list(await conn.scalars(select(Gateway.id)))
            now = utcnow()
            status = {"state": "idle", "running": {"version": "1.4.0", "slot": "a"}, "at": 0}
            await conn.execute(
                insert(GatewayOta),
                [
                    {"gateway_id": g, "status": status, "running_version": "1.4.0",
                     "running_slot": "a", "running_firmware": "1.1", "at": now}
                    for g in ids
                ],
            )  # fmt: skip
            await conn.execute(insert(GatewayTag), [{"gateway_id": g, "tag": TAG} for g in ids])
            await conn.execute(
                insert(Release),
                [{
                    "version": "1.5.0", "platform": "linux-aarch64", "python": "3.11",
                    "min_version": "1.0.0", "firmware": "1.2", "key_id": "bench", "size": 30e6,
                    "sha256": hashlib.sha256(b"bench").hexdigest(), "manifest": {},
                    "uploaded_by": "cli:bench", "uploaded_at": now,
                }],
            )  # fmt: skip
    finally:
        await engine.dispose()


def start_rollout(client: httpx.Client) -> int:
    """A rollout of 1.5.0 over every gateway, its first phase half of them (a page's worst
    case: hundreds on their way); its id once the driver commanded them."""
    [release] = client.get("/api/releases").json()
    created = client.post(
        "/api/rollouts",
        json={
            "name": "bench", "release": release["id"], "tag": TAG,
            "phases": [{"name": "half", "percent": 50}, {"name": "rest"}],
        },
    )  # fmt: skip
    created.raise_for_status()
    rollout = int(created.json()["id"])
    deadline = time.monotonic() + COMMANDED_TIMEOUT_S
    while client.get(f"/api/rollouts/{rollout}").json()["counts"]["commanded"] == 0:
        if time.monotonic() > deadline:
            raise RuntimeError("the fleet's driver commanded no canary")
        time.sleep(0.2)
    return rollout


def measure(url: str, label: str) -> dict[str, float]:
    asyncio.run(seed(url))
    asyncio.run(seed_releases(url))
    server, base = serve(url)
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            client.post("/api/login", json={"name": "bench", "password": PASSWORD})
            rollout = start_rollout(client)
            page = f"/rollouts/{rollout}"
            whole = client.get(f"{page}?live=1")
            whole.raise_for_status()
            unchanged = client.get(
                f"{page}?live=1", headers={"If-None-Match": whole.headers["etag"]}
            )
            releases = timed(client, ["/releases"])
            rollouts = timed(client, ["/rollouts"])
            one = timed(client, [page])
    finally:
        stop(server)
    return {
        f"releases_p50_ms_{label}": percentile(releases, 0.5),
        f"releases_p99_ms_{label}": percentile(releases, 0.99),
        f"rollouts_p50_ms_{label}": percentile(rollouts, 0.5),
        f"rollouts_p99_ms_{label}": percentile(rollouts, 0.99),
        f"rollout_p50_ms_{label}": percentile(one, 0.5),
        f"rollout_p99_ms_{label}": percentile(one, 0.99),
        f"rollout_refresh_bytes_{label}": float(wire_bytes(whole)),
        f"rollout_refresh_unchanged_bytes_{label}": float(wire_bytes(unchanged)),
        f"rollout_refresh_unchanged_status_{label}": float(unchanged.status_code),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rollout_pages", description=__doc__)
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
        targets={"*_p99_ms_*": "<= 100", "rollout_refresh_unchanged_bytes_*": "<= 10000"},
        units={"*_ms_*": "ms", "*_bytes_*": "bytes", "load_1min": "load average"},
    )


if __name__ == "__main__":
    main()

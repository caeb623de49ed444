"""Fleet API latency on a fleet of 1000 gateways: GET /api/overview and GET /api/history.

The database holds 100 sites × 10 gateways, 5 devices per gateway with 8 latest values each,
open and cleared alarms on about a tenth of the gateways, and an hour of samples every 5 s
for 100 points. ``fleet serve`` runs it in a process of its own (uvicorn on a free loopback
port, its embedded broker on another, as an operator starts it); this process asks through
httpx over real TCP with an API token, one request at a time, after a warm-up. Run on SQLite
and, when Debian's PostgreSQL is installed, on a throw-away PostgreSQL server
(hil_tests.postgres); without it the PostgreSQL metrics are left out and the reason printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from bench.report import write_result
from fleet.accounts.actor import Actor
from fleet.accounts.tokens import create_token
from fleet.accounts.users import create_user
from fleet.core.db import open_database, sessions
from fleet.models import Alarm, Device, Gateway, LatestValue, Role, Sample, Site, utcnow
from hil_tests.broker import free_port
from hil_tests.rig.processes import terminate

NAME = "fleet_api"
SITES, GATEWAYS_PER_SITE, DEVICES_PER_GATEWAY, POINTS_PER_DEVICE = 100, 10, 5, 8
HISTORY_POINTS, SAMPLE_EVERY_S = 100, 5
REQUESTS, WARM_UP = 200, 10
READY_TIMEOUT_S = 30.0
PASSWORD = "bench password only"


def _rows() -> dict[type[Any], list[dict[str, Any]]]:
    """Every row of the benchmark fleet, with explicit ids, times relative to now."""
    rng = random.Random(7)
    now = utcnow()
    sites = [{"id": s + 1, "name": f"site-{s:03d}", "title": f"Site {s}"} for s in range(SITES)]
    gateways, devices, latest, alarms = [], [], [], []
    for g in range(SITES * GATEWAYS_PER_SITE):
        online = rng.random() > 0.05
        gateways.append({
            "id": g + 1, "site_id": g // GATEWAYS_PER_SITE + 1, "name": f"gw-{g % 10}",
            "online": online, "version": "1.4.0", "last_seen": now - timedelta(seconds=g % 60),
            "health": {"outbox_depth": rng.randrange(0, 50), "cpu_percent": 3.0},
            "health_at": now,
        })  # fmt: skip
        for d in range(DEVICES_PER_GATEWAY):
            device_id = g * DEVICES_PER_GATEWAY + d + 1
            devices.append({
                "id": device_id, "gateway_id": g + 1, "name": f"dev-{d}", "model": "EVSE-HEC",
                "last_seen": now,
            })  # fmt: skip
            latest.extend(
                {"device_id": device_id, "point": f"p{p}", "value": rng.random() * 100,
                 "quality": "good", "at": now}
                for p in range(POINTS_PER_DEVICE)
            )  # fmt: skip
        if g % 10 == 3:
            for a in range(rng.randrange(1, 4)):
                alarms.append({
                    "gateway_id": g + 1, "raised_event": a + 1, "key": f"alarm-{a}",
                    "severity": rng.choice(["critical", "major", "minor", "info"]),
                    "interlock": "I1", "device": "dev-0", "message": "bench alarm",
                    "values": {}, "raised_at": now - timedelta(minutes=a),
                    "cleared_at": now if a == 2 else None,
                })  # fmt: skip
    samples = [
        {"device_id": 1 + i * 37, "point": "p0", "value": v, "num": v, "quality": "good",
         "at": now - timedelta(seconds=s * SAMPLE_EVERY_S)}
        for i in range(HISTORY_POINTS)
        for s in range(3600 // SAMPLE_EVERY_S)
        for v in [float(rng.randrange(0, 10_000)) / 10]
    ]  # fmt: skip
    return {Site: sites, Gateway: gateways, Device: devices, LatestValue: latest,
            Alarm: alarms, Sample: samples}  # fmt: skip


async def seed(url: str) -> tuple[str, int]:
    """Fill the database; an admin's API token (role viewer) and the number of samples."""
    engine = await open_database(url)
    try:
        rows = _rows()
        async with engine.begin() as conn:
            for table, values in rows.items():
                for start in range(0, len(values), 5000):
                    await conn.execute(insert(table), values[start : start + 5000])
        async with sessions(engine)() as session:
            owner = await create_user(session, "bench", Role.ADMIN, PASSWORD)
            actor = Actor(user_id=owner.id, user="bench", role=Role.ADMIN, label="cli:bench")
            _, secret = await create_token(session, actor, owner, "bench", Role.VIEWER)
            await session.commit()
        return secret, len(rows[Sample])
    finally:
        await engine.dispose()


def serve(url: str) -> tuple[subprocess.Popen[bytes], str]:
    """``fleet serve`` on free ports; its process and base URL once it answers."""
    http, mqtt = free_port(), free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "fleet.cli", "serve", "--db", url, "--port", str(http),
            "--mqtt-listen", f"127.0.0.1:{mqtt}", "--mqtt-client-id", f"bench-{os.getpid()}",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{http}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            httpx.get(f"{base}/api/me", timeout=1)
            return server, base
        except httpx.TransportError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"fleet serve did not answer on {base}") from None
            time.sleep(0.1)


def stop(server: subprocess.Popen[bytes]) -> None:
    terminate(server, timeout=10)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(client: httpx.Client, path: str, params: list[dict[str, Any]]) -> list[float]:
    """Milliseconds per request, after WARM_UP unmeasured ones."""
    took = []
    for i in range(WARM_UP + REQUESTS):
        started = time.perf_counter()
        answer = client.get(path, params=params[i % len(params)])
        elapsed = (time.perf_counter() - started) * 1000
        answer.raise_for_status()
        if i >= WARM_UP:
            took.append(elapsed)
    return took


def measure(url: str, label: str) -> dict[str, float]:
    started = time.monotonic()
    token, samples = asyncio.run(seed(url))
    seeded = time.monotonic() - started
    server, base = serve(url)
    try:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            overview = timed(client, "/api/overview", [{}])
            size = len(client.get("/api/overview").content)
            points = [
                {"site": f"site-{(i * 37) // 50:03d}", "gateway": f"gw-{(i * 37) // 5 % 10}",
                 "device": f"dev-{(i * 37) % 5}", "point": "p0", "buckets": 200}
                for i in range(HISTORY_POINTS)
            ]  # fmt: skip
            history = timed(client, "/api/history", points)
            series = client.get("/api/history", params=points[0]).json()["series"]
            counted = sum(b["n"] for b in series)  # the oldest may have left the last hour
            if not 0.9 * 3600 / SAMPLE_EVERY_S <= counted <= 3600 / SAMPLE_EVERY_S:
                raise RuntimeError(f"history counted {counted} samples of the last hour")
    finally:
        stop(server)
    return {
        f"overview_p50_ms_{label}": percentile(overview, 0.5),
        f"overview_p99_ms_{label}": percentile(overview, 0.99),
        f"history_p50_ms_{label}": percentile(history, 0.5),
        f"history_p99_ms_{label}": percentile(history, 0.99),
        f"overview_bytes_{label}": float(size),
        f"samples_{label}": float(samples),
        f"seed_s_{label}": seeded,
    }


def postgres_missing() -> str | None:
    if not any(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")):
        return "Debian's PostgreSQL is not installed (sudo apt-get install postgresql)"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_api", description=__doc__)
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()
    metrics: dict[str, float] = {"gateways": float(SITES * GATEWAYS_PER_SITE)}
    with tempfile.TemporaryDirectory(prefix="doorstep-bench-") as tmp:
        metrics |= measure(f"sqlite:///{Path(tmp) / 'fleet.db'}", "sqlite")
    reason = "--no-postgres" if args.no_postgres else postgres_missing()
    if reason is None:
        from hil_tests.postgres import PostgresServer

        with PostgresServer() as pg:
            metrics |= measure(pg.fresh_database(), "postgresql")
    else:
        print(f"PostgreSQL metrics left out: {reason}", file=sys.stderr)
    units = {k: "ms" for k in metrics if "_ms_" in k}
    units |= {k: "s" for k in metrics if k.startswith("seed_s")}
    units |= {k: "bytes" for k in metrics if k.startswith("overview_bytes")}
    units |= {k: "count" for k in metrics if k.startswith(("samples", "gateways"))}
    targets = {
        f"{what}_p99_ms_{db}": limit
        for db in ("sqlite", "postgresql")
        for what, limit in (("overview", "<= 500"), ("history", "<= 100"))
        if f"{what}_p99_ms_{db}" in metrics
    }
    write_result(NAME, metrics, targets=targets, units=units)


if __name__ == "__main__":
    main()

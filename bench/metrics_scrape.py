"""What Prometheus scrapes cost (issue 17.5): the gateway's control-loop lateness while its
``/metrics`` is scraped far more often than Prometheus would, against the same windows
unscraped, and the time and size of one scrape of the gateway and of the fleet.

The example site runs in the rig's own process (hil_tests.site_process); the gateway in a
process of its own, prepared as ``gateway run`` prepares it, with a ``[metrics]`` table. After
a warm-up it measures its control loop over alternating windows, quiet and scraped; this
process scrapes it over HTTP, from outside as Prometheus does, every ``--interval`` seconds
during the scraped windows only. The fleet's ``/metrics`` is timed in-process on SQLite after
some ingest.

    python -m bench.metrics_scrape [--windows 4] [--seconds 10] [--interval 0.05]

Target: scraping changes the lateness p99 by less than 1 ms (Prometheus scrapes every 15 s;
this scrapes 20 times a second).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.report import write_result
from gateway.bus.stats import LatencyWindow
from gateway.cli.run import prepare_control_thread
from gateway.metrics import MetricsConfig
from gateway.runtime import Gateway
from gateway.site import load_site
from hil_tests.broker import free_port
from hil_tests.site_process import SiteProcess

NAME = "metrics_scrape"
WARM_UP_S = 5.0


async def _measure(config: Path, state: Path, port: int, windows: int, seconds: float) -> None:
    """In the gateway's process: say when the windows start, measure each, print JSON."""
    granted = prepare_control_thread()
    site = load_site(config).model_copy(update={"metrics": MetricsConfig(port=port)})
    async with Gateway(site, state_dir=state) as gw:
        await asyncio.sleep(WARM_UP_S)
        loop = gw.supervisor.loop
        start = time.time() + 0.5
        print(f"READY {start}", flush=True)
        results = []
        for k in range(windows):
            await asyncio.sleep(max(0.0, start + k * seconds - time.time()))
            loop.lateness = LatencyWindow(size=int(seconds / loop.period_s) + 16)
            loop.max_lateness_s, skipped = 0.0, loop.skipped
            await asyncio.sleep(max(0.0, start + (k + 1) * seconds - time.time()))
            snap = loop.snapshot()
            results.append(
                {
                    "scraped": k % 2 == 1,
                    "p99_ms": snap["lateness_p99_ms"],
                    "max_ms": snap["lateness_max_ms"],
                    "skipped": loop.skipped - skipped,
                }
            )
        print(json.dumps({"policy": granted.policy, "windows": results}), flush=True)


def _scrape_gateway(args: argparse.Namespace, resolved: Path, state: Path) -> dict[str, object]:
    port = free_port()
    argv = [
        sys.executable, "-m", "bench.metrics_scrape", "--gateway", str(resolved),
        "--state-dir", str(state), "--port", str(port), "--windows", str(args.windows),
        "--seconds", str(args.seconds),
    ]  # fmt: skip
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    ready = child.stdout.readline()
    if not ready.startswith("READY "):
        child.kill()
        raise RuntimeError(f"the gateway did not start: {ready!r}")
    start = float(ready.split()[1])
    times: list[float] = []
    sizes: list[int] = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        for k in range(1, args.windows, 2):  # the scraped windows
            begin, end = start + k * args.seconds + 0.2, start + (k + 1) * args.seconds - 0.2
            time.sleep(max(0.0, begin - time.time()))
            while time.time() < end:
                t = time.perf_counter()
                answer = client.get("/metrics")
                times.append(time.perf_counter() - t)
                sizes.append(len(answer.content))
                time.sleep(args.interval)
    out, _ = child.communicate(timeout=args.windows * args.seconds + 60)
    result: dict[str, object] = json.loads(out.splitlines()[-1])
    result["scrape_ms"] = sorted(t * 1000 for t in times)
    result["bytes"] = statistics.median(sizes)
    return result


async def _scrape_fleet(scrapes: int) -> list[float]:
    from fleet.accounts.actor import cli_actor
    from fleet.accounts.tokens import create_token
    from fleet.accounts.users import create_user
    from fleet.app import create_app
    from fleet.core.settings import Settings
    from fleet.models import Role
    from fleet.registry import register_gateway
    from gateway import wire

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/fleet.db"
        app = create_app(Settings(database_url=url, ingest=False))
        async with app.router.lifespan_context(app):
            async with app.state.sessions() as session:
                await register_gateway(session, "north", "gw-1")
                user = await create_user(session, "prometheus", Role.VIEWER, "a long enough secret")
                _, token = await create_token(session, cli_actor(), user, "s", Role.VIEWER, None)
                await session.commit()
            now = time.time()
            for seq in range(1, 51):
                readings = [wire.Reading(d="m", p=f"p{i}", v=i, q="good", t=now) for i in range(50)]
                batch = wire.TelemetryBatch(seq=seq, at=now, readings=readings)
                await app.state.ingest.handle(
                    wire.topic("north", "gw-1", wire.Kind.TELEMETRY), wire.encode(batch)
                )
            transport = httpx.ASGITransport(app=app)
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(
                transport=transport, base_url="http://f", headers=headers
            ) as c:
                times = []
                for _ in range(scrapes):
                    t = time.perf_counter()
                    assert (await c.get("/metrics")).status_code == 200
                    times.append((time.perf_counter() - t) * 1000)
    return sorted(times)


def _pick(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p * len(values)))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=4, help="measured windows (even: pairs)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each window")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between scrapes")
    parser.add_argument("--gateway", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.gateway is not None:
        asyncio.run(_measure(args.gateway, args.state_dir, args.port, args.windows, args.seconds))
        return
    with (
        tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp,
        SiteProcess(Path(tmp) / "rig") as site,
    ):
        result = _scrape_gateway(args, site.resolved, Path(tmp) / "state")
    print(json.dumps(result["windows"]), file=sys.stderr)
    windows = result["windows"]
    assert isinstance(windows, list)
    metrics: dict[str, float] = {}
    for kind, scraped in (("quiet", False), ("scraped", True)):
        mine = [w for w in windows if w["scraped"] is scraped]
        for field in ("p99_ms", "max_ms", "skipped"):
            values = [float(w[field]) for w in mine]
            metrics[f"{kind}_{field}_min"], metrics[f"{kind}_{field}_max"] = (
                min(values),
                max(values),
            )
    scrape_ms = result["scrape_ms"]
    assert isinstance(scrape_ms, list)
    metrics["gateway_scrape_p50_ms"] = _pick(scrape_ms, 0.5)
    metrics["gateway_scrape_p99_ms"] = _pick(scrape_ms, 0.99)
    metrics["gateway_scrapes"] = len(scrape_ms)
    metrics["gateway_scrape_bytes"] = float(str(result["bytes"]))
    fleet = asyncio.run(_scrape_fleet(200))
    metrics["fleet_scrape_p50_ms"] = _pick(fleet, 0.5)
    metrics["fleet_scrape_p99_ms"] = _pick(fleet, 0.99)
    metrics["load"] = os.getloadavg()[0]
    metrics["realtime"] = float(result["policy"] == "rr")
    write_result(
        NAME,
        metrics,
        targets={"scraped_p99_ms_max - quiet_p99_ms_max": "< 1", "scraped_skipped_max": "== 0"},
        units={"p99_ms": "ms", "max_ms": "ms", "scrape": "ms", "bytes": "bytes"},
    )


if __name__ == "__main__":
    main()

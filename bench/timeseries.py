"""History storage and reads on PostgreSQL at fleet scale.

On a throw-away PostgreSQL server (hil_tests.postgres), a database migrated to the current
schema is filled with SQL (generate_series), then measured:

- bytes per stored raw point: ``--raw-rows`` samples (4 numeric points per device, one
  reading each every 5 s, inserted in time order as ingest does) in today's day partition;
  table and index bytes over the row count after VACUUM;
- the history query (fleet.queries.history.history, in this process over asyncpg) for 30 days
  of one point at 1-minute resolution (2000 buckets from the per-minute rollups) and at
  1-hour resolution (200 buckets from the per-hour rollups), with ``--gateways`` gateways'
  rollups of one point each in the database (written in time order, as the rollup job does);
  a different gateway each time, after a warm-up;
- the overview (fleet.queries.overview.overview) with ``--overview-gateways`` gateways
  (10 per site, 5 devices each, open alarms on a tenth of them).

The load average is printed with the numbers: this machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bench.fleet_api import percentile, postgres_missing
from bench.report import write_result
from fleet.core.db import open_database, sessions
from fleet.queries.history import Resolution, history
from fleet.queries.overview import overview
from fleet.timeseries.jobs import TimeseriesJobs
from hil_tests.postgres import PostgresServer

NAME = "timeseries"
QUERIES, WARM_UP = 100, 10
DAYS = 30


async def _sql(engine: AsyncEngine, *statements: str, **params: object) -> None:
    async with engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement), params)


async def seed_fleet(engine: AsyncEngine, gateways: int) -> None:
    """Sites of 10 gateways, 5 devices each, health, alarms on every tenth gateway."""
    sites = -(-gateways // 10)
    await _sql(
        engine,
        "INSERT INTO sites (id, name, title, created_at, maintenance_window, timezone) "
        "SELECT s, 'site-' || lpad(s::text, 5, '0'), 'Site ' || s, now(), '', 'UTC' "
        "FROM generate_series(1, :sites) s",
        "INSERT INTO gateways (id, site_id, name, created_at, online, version, last_seen, "
        "health, health_at) SELECT g, (g - 1) / 10 + 1, 'gw-' || ((g - 1) % 10), now(), "
        "g % 20 <> 0, '1.4.0', now() - (g % 60) * interval '1 second', "
        "json_build_object('outbox_depth', g % 50, 'cpu_percent', 3.0), now() "
        "FROM generate_series(1, :gateways) g",
        "INSERT INTO devices (id, gateway_id, name, model, last_seen) "
        "SELECT (g - 1) * 5 + d + 1, g, 'dev-' || d, 'EVSE-HEC', now() "
        "FROM generate_series(1, :gateways) g, generate_series(0, 4) d",
        "INSERT INTO alarms (gateway_id, raised_event, key, severity, interlock, device, "
        "message, values, raised_at, count) SELECT g, a, 'alarm-' || a, "
        "(ARRAY['critical','major','minor','info'])[1 + (g + a) % 4], 'I1', 'dev-0', "
        "'bench alarm', '{}', now() - a * interval '1 minute', 1 "
        "FROM generate_series(1, :gateways) g, generate_series(1, 2) a WHERE g % 10 = 3",
        "SELECT setval(pg_get_serial_sequence('sites', 'id'), :sites)",
        "SELECT setval(pg_get_serial_sequence('gateways', 'id'), :gateways)",
        "SELECT setval(pg_get_serial_sequence('devices', 'id'), :gateways * 5)",
        sites=sites,
        gateways=gateways,
    )


def _device(gateway: int) -> int:
    """The first device of gateway number ``gateway`` (1-based), as seed_fleet numbers them."""
    return (gateway - 1) * 5 + 1


async def seed_raw(engine: AsyncEngine, rows: int, devices: int, now: datetime) -> None:
    """``rows`` samples: 4 points of ``devices`` devices, every 5 s, ending before ``now``."""
    steps = max(1, rows // (4 * devices))
    at = "CAST(:start AS timestamptz) + s * interval '5 seconds'"
    await _sql(
        engine,
        "INSERT INTO samples (device_id, point, at, value, num, quality) "
        f"SELECT (g - 1) * 5 + 1, p, {at}, to_json(v), v, 'good' "
        "FROM generate_series(0, CAST(:steps AS integer) - 1) s, "
        "generate_series(1, CAST(:devices AS integer)) g, "
        "unnest(ARRAY['power', 'energy', 'temp', 'current']) p, "
        "LATERAL (SELECT round((random() * 1000)::numeric, 2)::float8 + 0 * s AS v) r "
        "ORDER BY s",
        start=now - timedelta(seconds=5 * steps + 60),
        steps=steps,
        devices=devices,
    )
    await _sql(engine, "ANALYZE samples")


async def raw_bytes(engine: AsyncEngine) -> tuple[float, float, float]:
    """Rows, table bytes and index bytes of every partition of samples."""
    async with engine.connect() as conn:
        await conn.execute(text("COMMIT"))
        await conn.execute(text("VACUUM samples"))
        row = (
            await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM samples), "
                    "sum(pg_table_size(inhrelid)), sum(pg_indexes_size(inhrelid)) "
                    "FROM pg_inherits WHERE inhparent = 'samples'::regclass"
                )
            )
        ).one()
    return float(row[0]), float(row[1]), float(row[2])


async def seed_rollups(engine: AsyncEngine, gateways: int, now: datetime) -> None:
    """30 days of per-minute and per-hour rollups of one point of each gateway, written in
    time order; keys and indexes built after the load (as fast as SQL goes)."""
    start = (now - timedelta(days=DAYS)).replace(second=0, microsecond=0)
    load = (
        "INSERT INTO {table} (device_id, point, at, min, max, sum, count, last, last_at) "
        "SELECT (g - 1) * 5 + 1, 'power', t, v - 1, v + 1, v * 12, 12, v, t "
        "FROM generate_series(CAST(:start AS timestamptz), CAST(:end AS timestamptz), "
        "interval '1 {unit}') t, "
        "generate_series(1, :gateways) g, LATERAL (SELECT random() * 100 + 0 * g AS v) r "
        "ORDER BY t"
    )
    await _sql(
        engine,
        "ALTER TABLE rollups_minute DROP CONSTRAINT rollups_minute_pkey",
        "DROP INDEX ix_rollups_minute_at",
        "SET session_replication_role = replica",  # no foreign key checks while loading
        load.format(table="rollups_minute", unit="minute"),
        load.format(table="rollups_hour", unit="hour"),
        "ALTER TABLE rollups_minute ADD PRIMARY KEY (device_id, point, at) "
        "INCLUDE (min, max, sum, count)",
        "CREATE INDEX ix_rollups_minute_at ON rollups_minute (at)",
        start=start,
        end=now - timedelta(minutes=1),
        gateways=gateways,
    )
    async with engine.connect() as conn:
        await conn.execute(text("COMMIT"))
        await conn.execute(text("VACUUM ANALYZE rollups_minute"))
        await conn.execute(text("VACUUM ANALYZE rollups_hour"))


async def timed_history(
    maker: async_sessionmaker[AsyncSession],
    gateways: int,
    now: datetime,
    buckets: int,
    resolution: Resolution,
) -> tuple[list[float], int]:
    """Milliseconds per query (a random gateway each), and the buckets of the last one."""
    rng = random.Random(17)
    took, got = [], 0
    for i in range(WARM_UP + QUERIES):
        device = _device(rng.randrange(1, gateways + 1))
        started = time.perf_counter()
        async with maker() as session:
            _, series = await history(
                session, device, "power", now - timedelta(days=DAYS), now, buckets, resolution
            )
        if i >= WARM_UP:
            took.append((time.perf_counter() - started) * 1000)
        got = len(series)
    return took, got


async def timed_overview(maker: async_sessionmaker[AsyncSession]) -> tuple[list[float], int]:
    took, gateways = [], 0
    for i in range(WARM_UP + QUERIES // 4):
        started = time.perf_counter()
        async with maker() as session:
            answer = await overview(session)
        if i >= WARM_UP:
            took.append((time.perf_counter() - started) * 1000)
        gateways = sum(len(site.gateways) for site in answer.sites)
    return took, gateways


async def measure(url: str, args: argparse.Namespace) -> dict[str, float]:
    engine = await open_database(url)
    maker = sessions(engine)
    metrics: dict[str, float] = {}
    try:
        now = datetime.now(UTC)
        started = time.monotonic()
        await seed_fleet(engine, args.overview_gateways)
        await TimeseriesJobs(maker).keep_ahead(now.date() - timedelta(days=1))
        await seed_raw(engine, args.raw_rows, min(1000, args.overview_gateways), now)
        rows, table, index = await raw_bytes(engine)
        metrics |= {
            "raw_rows": rows,
            "raw_bytes_per_point": (table + index) / rows,
            "raw_table_bytes_per_point": table / rows,
            "raw_index_bytes_per_point": index / rows,
        }
        await seed_rollups(engine, args.gateways, now)
        metrics["seed_s"] = time.monotonic() - started
        for label, buckets, resolution in (
            ("minute", 2000, Resolution.MINUTE),
            ("hour", 200, Resolution.HOUR),
        ):
            took, got = await timed_history(maker, args.gateways, now, buckets, resolution)
            if got < buckets * 0.9:
                raise RuntimeError(f"30 days at {label} resolution gave {got} buckets only")
            metrics[f"history_30d_{label}_p50_ms"] = percentile(took, 0.5)
            metrics[f"history_30d_{label}_p99_ms"] = percentile(took, 0.99)
        took, shown = await timed_overview(maker)
        if shown != args.overview_gateways:
            raise RuntimeError(f"the overview showed {shown} gateways")
        metrics["overview_p50_ms"] = percentile(took, 0.5)
        metrics["overview_p99_ms"] = percentile(took, 0.99)
    finally:
        await engine.dispose()
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.timeseries", description=__doc__)
    parser.add_argument("--gateways", type=int, default=1000, help="gateways' rollups")
    parser.add_argument("--overview-gateways", type=int, default=10_000)
    parser.add_argument("--raw-rows", type=int, default=2_000_000)
    args = parser.parse_args()
    missing = postgres_missing()
    if missing:
        print(f"bench.timeseries needs PostgreSQL: {missing}")
        return
    with PostgresServer() as server:
        metrics = asyncio.run(measure(server.fresh_database(), args))
    metrics |= {
        "gateways": float(args.gateways),
        "overview_gateways": float(args.overview_gateways),
        "load_1m": os.getloadavg()[0],
    }
    write_result(
        NAME,
        metrics,
        targets={
            "history_30d_minute_p99_ms": "<= 100",
            "history_30d_hour_p99_ms": "<= 100",
            "overview_p99_ms": "<= 200",
        },
        units={
            "raw_bytes_per_point": "bytes (table + indexes) per stored raw sample",
            "history_30d_minute_p99_ms": "ms, fleet.queries.history in process over asyncpg",
            "overview_p99_ms": "ms, fleet.queries.overview in process over asyncpg",
            "seed_s": "s to fill the database",
        },
    )


if __name__ == "__main__":
    main()

"""Fleet ingest throughput: telemetry points per second stored, on SQLite and PostgreSQL.

100 simulated gateways in a process of their own (as gateways are elsewhere), one MQTT
connection each, publish telemetry batches of 50 readings at QoS 1 as fast as the broker
takes them, through mosquitto (Debian's, if installed; else, or with ``--embedded``, the
fleet's embedded amqtt broker, which then shares this process's CPU) into ``run_ingest`` →
``Ingest.handle`` in this process, one transaction per batch.
Measured from the first batch stored to the last (connection set-up left out): points and
batches per second, and this process's CPU as a fraction of one core.

PostgreSQL is a throw-away server (hil_tests.postgres, fsync off as in the tests, so the
number is the CPU cost of ingest, not the disk's); without Debian's PostgreSQL its metrics
are null with the reason.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest

from bench.report import write_result
from fleet.core.broker import BrokerUrl, EmbeddedBroker
from fleet.core.db import open_database, sessions
from fleet.ingest.ingest import Ingest
from fleet.ingest.pipeline import run_ingest
from fleet.registry import register_gateway
from gateway import wire
from hil_tests.broker import HOST, Mosquitto, free_port
from hil_tests.postgres import PostgresServer

NAME = "fleet_ingest"
GATEWAYS = 100
BATCHES = 8  # per gateway
READINGS = 50  # per batch
SITE = "bench"
T0 = 1_700_000_000.0
TIMEOUT_S = 120.0


def gateway_name(n: int) -> str:
    return f"gw-{n:03d}"


def batch(seq: int, readings: int) -> bytes:
    return wire.encode(
        wire.TelemetryBatch(
            seq=seq,
            at=T0 + seq,
            readings=[
                wire.Reading(
                    d=f"dev-{i % 10}", p=f"p{i // 10}", v=seq + i / 10, q="good", t=T0 + seq
                )
                for i in range(readings)
            ],
        )
    )


# -- the gateways (a process of their own) -----------------------------------------------------


async def publish(port: int, gateways: int, batches: int, readings: int) -> None:
    payloads = [batch(seq, readings) for seq in range(1, batches + 1)]

    async def gateway(n: int) -> None:
        topic = wire.topic(SITE, gateway_name(n), wire.Kind.TELEMETRY)
        async with aiomqtt.Client(HOST, port, identifier=f"bench-{gateway_name(n)}") as client:
            for payload in payloads:
                await client.publish(topic, payload, qos=1)

    async with asyncio.TaskGroup() as group:
        for n in range(gateways):
            group.create_task(gateway(n))


# -- the fleet (this process) ------------------------------------------------------------------


async def measure(url: str, broker: BrokerUrl, args: argparse.Namespace) -> dict[str, float]:
    engine = await open_database(url)
    try:
        make = sessions(engine)
        async with make.begin() as session:
            for n in range(args.gateways):
                await register_gateway(session, SITE, gateway_name(n))
        ingest = Ingest(make)
        ready = asyncio.Event()
        total = args.gateways * args.batches
        task = asyncio.create_task(
            run_ingest(ingest, broker, client_id=f"bench-ingest-{time.monotonic_ns()}", ready=ready)
        )
        try:
            await asyncio.wait_for(ready.wait(), 10)
            publisher = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.fleet_ingest", "--publish", str(broker.port),
                "--gateways", str(args.gateways), "--batches", str(args.batches),
                "--readings", str(args.readings),
            )  # fmt: skip
            first, cpu_first, last = await wait_stored(ingest, total)
            cpu = time.process_time() - cpu_first
            if await publisher.wait() != 0:
                raise RuntimeError(f"the publishing gateways exited with {publisher.returncode}")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        await engine.dispose()
    stats = ingest.stats()
    if stats["rejected"] or stats["duplicates"]:
        raise RuntimeError(f"ingest refused bench batches: {stats}")
    elapsed = last - first
    return {
        "points_per_s": (total - 1) * args.readings / elapsed,
        "batches_per_s": (total - 1) / elapsed,
        "cpu_fraction": cpu / elapsed,
        "seconds": elapsed,
    }


async def wait_stored(ingest: Ingest, total: int) -> tuple[float, float, float]:
    """(monotonic time of the first batch stored, process CPU then, time of the last)."""
    deadline = time.monotonic() + TIMEOUT_S
    first = cpu_first = None
    while True:
        stored = ingest.stats()["accepted"].get("telemetry", 0)
        now = time.monotonic()
        if stored and first is None:
            first, cpu_first = now, time.process_time()
        if stored >= total and first is not None and cpu_first is not None:
            return first, cpu_first, now
        if now > deadline:
            raise RuntimeError(f"only {stored} of {total} batches stored in {TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def broker(directory: Path, embedded: bool) -> AsyncIterator[tuple[str, BrokerUrl]]:
    if not embedded and shutil.which("mosquitto", path="/usr/sbin:/usr/bin:/sbin:/bin"):
        with Mosquitto(directory / "mosquitto") as mosquitto:
            yield "mosquitto", BrokerUrl(HOST, mosquitto.port)
    else:
        async with EmbeddedBroker(HOST, free_port()) as embedded:
            yield "embedded", BrokerUrl.parse(embedded.url)


@contextlib.contextmanager
def postgres() -> Iterator[PostgresServer | str]:
    """A throw-away server, or why there is none."""
    try:
        server = PostgresServer()
    except (pytest.skip.Exception, pytest.fail.Exception) as exc:
        yield str(exc.msg)
        return
    with server:
        yield server


async def run(args: argparse.Namespace) -> tuple[dict[str, float], dict[str, str]]:
    metrics: dict[str, float] = {}
    missing: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="doorstep-bench-") as tmp:
        async with broker(Path(tmp), args.embedded) as (kind, url):
            metrics["broker_mosquitto"] = float(kind == "mosquitto")
            sqlite = await measure(f"sqlite:///{tmp}/fleet.db", url, args)
            metrics |= {f"sqlite_{k}": v for k, v in sqlite.items()}
            with postgres() as server:
                if isinstance(server, str):
                    missing["postgresql_points_per_s"] = server
                else:
                    pg = await measure(server.fresh_database(), url, args)
                    metrics |= {f"postgresql_{k}": v for k, v in pg.items()}
    return metrics, missing


UNITS = {
    "sqlite_points_per_s": "1/s",
    "sqlite_batches_per_s": "1/s",
    "sqlite_cpu_fraction": "fraction of one core",
    "sqlite_seconds": "s",
    "postgresql_points_per_s": "1/s",
    "postgresql_batches_per_s": "1/s",
    "postgresql_cpu_fraction": "fraction of one core",
    "postgresql_seconds": "s",
    "broker_mosquitto": "1 = mosquitto, 0 = embedded amqtt",
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--gateways", type=int, default=GATEWAYS)
    parser.add_argument("--batches", type=int, default=BATCHES, help="per gateway")
    parser.add_argument("--readings", type=int, default=READINGS, help="per batch")
    parser.add_argument(
        "--embedded", action="store_true", help="the embedded amqtt broker even with mosquitto"
    )
    parser.add_argument("--publish", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.publish:
        asyncio.run(publish(args.publish, args.gateways, args.batches, args.readings))
        return
    metrics, missing = asyncio.run(run(args))
    path = write_result(NAME, metrics, units=UNITS)
    if missing:  # write_result takes numbers only: a metric not measured is null, with why
        doc = json.loads(path.read_text())
        doc["metrics"] |= dict.fromkeys(missing)
        doc["not_measured"] = missing
        path.write_text(json.dumps(doc, indent=2) + "\n")
        print(json.dumps(doc))


if __name__ == "__main__":
    main()

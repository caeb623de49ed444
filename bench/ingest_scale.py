"""Ingest points/s on PostgreSQL with one fleet worker: 1000 simulated gateways publishing
50-reading telemetry batches (issue 17's workload; target: >= 50,000 points/s per worker).

The gateways live in a publishing process of their own (a few MQTT connections, each
publishing for many gateways, QoS 1, as fast as mosquitto takes them); the worker is
``run_ingest`` in this process: messages gathered into transactions of up to 2,000 rows,
samples by COPY. Measured from the first batch stored to the last, over ``--runs`` runs
(each on a fresh database): points/s, points per CPU-second of this process, messages per
transaction; with the load average seen, as the machine is shared (on two cores the broker,
the publisher and PostgreSQL take their share beside the worker).

PostgreSQL is a throw-away server (hil_tests.postgres, fsync off: the CPU cost of ingest,
not the disk's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt

from bench.fleet_ingest import postgres
from bench.report import write_result
from fleet.core.broker import BrokerUrl
from fleet.core.db import open_database, sessions
from fleet.ingest.ingest import Ingest
from fleet.ingest.pipeline import run_ingest
from fleet.registry import register_gateway
from gateway import wire
from hil_tests.broker import HOST, Mosquitto

NAME = "ingest_scale"
GATEWAYS = 1000
BATCHES = 5  # per gateway
READINGS = 50  # per batch
CONNECTIONS = 20  # of the publishing process
RUNS = 3
#: A run that has not stored everything by then failed (a loaded machine is slow, not wrong).
TIMEOUT_S = 900.0
SITE = "bench"


def gateway_name(n: int) -> str:
    return f"gw-{n:04d}"


def batch(seq: int, readings: int) -> bytes:
    at = time.time() - 60 + seq / 100
    return wire.encode(
        wire.TelemetryBatch(
            seq=seq,
            at=at,
            readings=[
                wire.Reading(d=f"dev-{i % 10}", p=f"p{i // 10}", v=seq + i / 10, q="good", t=at)
                for i in range(readings)
            ],
        )
    )


# -- the gateways (a process of their own) -----------------------------------------------------


async def publish(port: int, gateways: int, batches: int, readings: int, connections: int) -> None:
    """Every gateway's batches in order (batch 1 of every gateway, then 2, …), spread over
    ``connections`` connections."""
    payloads = [batch(seq, readings) for seq in range(1, batches + 1)]
    topics = [wire.topic(SITE, gateway_name(n), wire.Kind.TELEMETRY) for n in range(gateways)]

    async def connection(k: int) -> None:
        mine = topics[k::connections]
        async with aiomqtt.Client(HOST, port, identifier=f"bench-pub-{k}") as client:
            for payload in payloads:
                for topic in mine:
                    await client.publish(topic, payload, qos=1)

    async with asyncio.TaskGroup() as group:
        for k in range(connections):
            group.create_task(connection(k))


# -- the worker (this process) -----------------------------------------------------------------


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
            load = os.getloadavg()[0]
            publisher = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.ingest_scale", "--publish", str(broker.port),
                "--gateways", str(args.gateways), "--batches", str(args.batches),
                "--readings", str(args.readings), "--connections", str(args.connections),
            )  # fmt: skip
            first, cpu_first, last = await stored(ingest, total)
            cpu = time.process_time() - cpu_first
            load = max(load, os.getloadavg()[0])
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
    points = (total - 1) * args.readings
    return {
        "points_per_s": points / elapsed,
        "points_per_cpu_s": points / cpu,
        "messages_per_transaction": stats["accepted"]["telemetry"] / ingest.transactions,
        "load_1min": load,
    }


async def stored(ingest: Ingest, total: int) -> tuple[float, float, float]:
    """(monotonic time of the first batch stored, process CPU then, time of the last)."""
    deadline = time.monotonic() + TIMEOUT_S
    first = cpu_first = 0.0
    while True:
        count = ingest.stats()["accepted"].get("telemetry", 0)
        now = time.monotonic()
        if count and not first:
            first, cpu_first = now, time.process_time()
        if count >= total:
            return first, cpu_first, now
        if now > deadline:
            raise RuntimeError(f"only {count} of {total} batches stored in {TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.005)


async def run(args: argparse.Namespace) -> tuple[dict[str, float], str | None]:
    runs: list[dict[str, float]] = []
    with (
        tempfile.TemporaryDirectory(prefix="doorstep-bench-") as tmp,
        Mosquitto(Path(tmp) / "mosquitto") as mosquitto,
        postgres() as server,
    ):
        if isinstance(server, str):
            return {}, server
        broker = BrokerUrl(HOST, mosquitto.port)
        for _ in range(args.runs):
            runs.append(await measure(server.fresh_database(), broker, args))
    metrics: dict[str, float] = {}
    for key in runs[0]:
        values = [r[key] for r in runs]
        metrics[f"{key}_min"] = min(values)
        metrics[f"{key}_max"] = max(values)
    return metrics, None


UNITS = {
    "points_per_s_min": "1/s",
    "points_per_s_max": "1/s",
    "points_per_cpu_s_min": "points per CPU-second of the worker",
    "points_per_cpu_s_max": "points per CPU-second of the worker",
    "messages_per_transaction_min": "MQTT messages",
    "messages_per_transaction_max": "MQTT messages",
    "load_1min_min": "load average",
    "load_1min_max": "load average",
}
TARGETS = {"points_per_s_min": ">= 50000 (issue 17, one worker)"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--gateways", type=int, default=GATEWAYS)
    parser.add_argument("--batches", type=int, default=BATCHES, help="per gateway")
    parser.add_argument("--readings", type=int, default=READINGS, help="per batch")
    parser.add_argument("--connections", type=int, default=CONNECTIONS, help="publishing")
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--publish", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.publish:
        asyncio.run(
            publish(args.publish, args.gateways, args.batches, args.readings, args.connections)
        )
        return
    metrics, missing = asyncio.run(run(args))
    if missing is not None:
        print(f"{NAME}: not measured: {missing}", file=sys.stderr)
        sys.exit(1)
    write_result(NAME, metrics, targets=TARGETS, units=UNITS)


if __name__ == "__main__":
    main()

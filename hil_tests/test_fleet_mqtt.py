"""Ingest through a real broker: a gateway-like publisher (aiomqtt) sends state, telemetry,
events and health, and they land in the fleet database. On the embedded amqtt broker and on
a real mosquitto (SQLite), and once on PostgreSQL; and ingest rides out a mosquitto restart,
receiving what was published while it was away (QoS 1, persistent session), and a fleet
restart while its database was away, losing nothing it had not stored."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.core.broker import BrokerUrl, EmbeddedBroker
from fleet.core.db import create_engine, open_database, sessions
from fleet.errors import EmbeddedBrokerError
from fleet.ingest.ingest import Ingest
from fleet.ingest.pipeline import run_ingest
from fleet.models import Alarm, Device, Gateway, LatestValue, ReceivedBatch, Sample
from fleet.registry import register_gateway
from gateway import wire
from hil_tests.broker import HOST, Mosquitto, free_port
from hil_tests.postgres import PostgresServer

pytestmark = [pytest.mark.hil, pytest.mark.fleet]

SITE, GW = "s1", "gw1"
WITHIN_S = 20.0


def topic(kind: wire.Kind) -> str:
    return wire.topic(SITE, GW, kind)


def telemetry(seq: int) -> bytes:
    now = time.time()
    readings = [wire.Reading(d="pv", p="power", v=seq * 100, q="good", t=now)]
    return wire.encode(wire.TelemetryBatch(seq=seq, at=now, readings=readings))


def raised(seq: int, event_id: int) -> bytes:
    event = wire.Event(
        id=event_id,
        kind="raised",
        key="fire",
        severity="critical",
        interlock="I1",
        device="panel",
        message="fire alarm",
        at=time.time(),
    )
    return wire.encode(wire.EventBatch(seq=seq, at=time.time(), events=[event]))


def state() -> bytes:
    now = time.time()
    return wire.encode(
        wire.State(status="online", version="1.0", started_at=now, at=now, devices={"pv": "SUN"})
    )


def health() -> bytes:
    return wire.encode(
        wire.Health(
            at=time.time(),
            uptime_s=1.0,
            version="1.0",
            cpu_percent=1.0,
            memory_mib=40.0,
            disk_free_mib=500.0,
            outbox_depth=0,
            outbox_dropped=0,
        )
    )


async def publish(broker: BrokerUrl, *messages: tuple[str, bytes, bool]) -> None:
    """As a gateway does: QoS 1, each acknowledged by the broker."""
    async with aiomqtt.Client(broker.host, broker.port, identifier="gw1-test") as client:
        for name, payload, retain in messages:
            await client.publish(name, payload, qos=1, retain=retain)


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WITHIN_S
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WITHIN_S:.0f} s: {what}")
        await asyncio.sleep(0.05)


class Database:
    def __init__(self, make: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = make

    async def count(self, model: type[Any]) -> int:
        async with self.sessions() as s:
            return int(await s.scalar(select(func.count()).select_from(model)) or 0)

    async def gateway(self) -> Gateway:
        async with self.sessions() as s:
            gw: Gateway = (await s.scalars(select(Gateway))).one()
            return gw


@asynccontextmanager
async def database(url: str) -> AsyncIterator[Database]:
    engine = await open_database(url)
    try:
        make = sessions(engine)
        async with make.begin() as session:
            await register_gateway(session, SITE, GW)
        yield Database(make)
    finally:
        await engine.dispose()


@asynccontextmanager
async def ingesting(
    db: Database, broker: BrokerUrl, ingest: Ingest | None = None, **options: float
) -> AsyncIterator[tuple[Ingest, asyncio.Task[None]]]:
    """run_ingest as a task this test owns, ready (subscribed) on entry, cancelled on exit."""
    ingest = Ingest(db.sessions) if ingest is None else ingest
    ready = asyncio.Event()
    task = asyncio.create_task(
        run_ingest(ingest, broker, client_id="fleet-ingest-test", ready=ready, **options)
    )
    try:
        await asyncio.wait_for(ready.wait(), WITHIN_S)
        yield ingest, task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@asynccontextmanager
async def running_broker(kind: str, tmp_path: Path) -> AsyncIterator[BrokerUrl]:
    if kind == "embedded":
        async with EmbeddedBroker(HOST, free_port()) as embedded:
            yield BrokerUrl.parse(embedded.url)
    else:
        mosquitto = Mosquitto(tmp_path / "mosquitto")
        await asyncio.to_thread(mosquitto.start)
        try:
            yield BrokerUrl(HOST, mosquitto.port)
        finally:
            await asyncio.to_thread(mosquitto.stop)


@pytest.mark.parametrize(
    ("broker_kind", "db_kind"),
    [("embedded", "sqlite"), ("mosquitto", "sqlite"), ("mosquitto", "postgresql")],
)
async def test_what_a_gateway_publishes_lands_in_the_database(
    broker_kind: str, db_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if db_kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'fleet.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.fresh_database()
    async with running_broker(broker_kind, tmp_path) as broker, database(url) as db:
        # the retained state is there before ingest subscribes
        await publish(broker, (topic(wire.Kind.STATE), state(), True))
        async with ingesting(db, broker) as (ingest, _):
            second = telemetry(2)
            await publish(
                broker,
                (topic(wire.Kind.TELEMETRY), telemetry(1), False),
                (topic(wire.Kind.TELEMETRY), second, False),
                (topic(wire.Kind.TELEMETRY), second, False),  # a re-send: the same batch
                (topic(wire.Kind.EVENTS), raised(1, 7), False),
                (topic(wire.Kind.HEALTH), health(), False),
                ("doorstep/v1/s1/gw-unknown/telemetry", telemetry(1), False),
            )

            async def all_in() -> bool:
                stats = ingest.stats()
                return (
                    sum(stats["accepted"].values())
                    + stats["duplicates"]
                    + sum(stats["rejected"].values())
                    >= 7
                )

            await eventually(all_in, "seven messages handled")
            gw = await db.gateway()
            assert (gw.online, gw.version, gw.health is not None) == (True, "1.0", True)
            assert await db.count(Device) == 1
            assert await db.count(ReceivedBatch) == 3  # telemetry 1, 2 and events 1
            assert await db.count(Sample) == 2
            assert await db.count(LatestValue) == 1
            assert await db.count(Alarm) == 1
            assert ingest.stats() == {
                "accepted": {"state": 1, "telemetry": 2, "events": 1, "health": 1},
                "rejected": {"unknown-gateway": 1},
                "duplicates": 1,
                "gaps_opened": 0,
            }


async def test_ingest_rides_out_a_mosquitto_restart_and_gets_what_came_meanwhile(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fleet.ingest.pipeline")
    mosquitto = Mosquitto(tmp_path / "mosquitto")
    await asyncio.to_thread(mosquitto.start)
    broker = BrokerUrl(HOST, mosquitto.port)
    try:
        # a long first back-off: mosquitto is back, and has our messages, before ingest is
        async with (
            database(f"sqlite:///{tmp_path / 'fleet.db'}") as db,
            ingesting(db, broker, reconnect_min_s=3.0, reconnect_max_s=4.0) as (ingest, task),
        ):
            await publish(broker, (topic(wire.Kind.TELEMETRY), telemetry(1), False))

            def stored(n: int) -> Callable[[], Awaitable[bool]]:
                async def check() -> bool:
                    return await db.count(ReceivedBatch) == n

                return check

            await eventually(stored(1), "batch 1 stored")

            await asyncio.to_thread(mosquitto.stop)

            async def noticed() -> bool:
                return any("unavailable" in r.getMessage() for r in caplog.records)

            await eventually(noticed, "ingest notices the broker is gone")
            await asyncio.to_thread(mosquitto.start)
            await publish(
                broker,
                (topic(wire.Kind.TELEMETRY), telemetry(2), False),
                (topic(wire.Kind.TELEMETRY), telemetry(3), False),
                (topic(wire.Kind.EVENTS), raised(1, 1), False),
            )
            await eventually(stored(4), "what was published meanwhile is stored")
            assert not task.done()
            assert await db.count(Sample) == 3
            assert ingest.stats()["gaps_opened"] == 0
            assert any("back on" in r.getMessage() for r in caplog.records)
    finally:
        await asyncio.to_thread(mosquitto.stop)


async def test_a_fleet_restarted_while_its_database_was_away_loses_no_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Ingest holds a message it cannot store (its database is unreachable) with the ones
    behind it; the fleet is restarted: the new ingest (same client id) is handed them all by
    the broker, because none was acknowledged before it was stored."""
    caplog.set_level(logging.WARNING, logger="fleet.ingest.pipeline")
    mosquitto = Mosquitto(tmp_path / "mosquitto")
    await asyncio.to_thread(mosquitto.start)
    broker = BrokerUrl(HOST, mosquitto.port)
    nowhere = create_engine(f"postgresql://fleet@{HOST}:{free_port()}/fleet")  # nothing listens
    try:
        async with database(f"sqlite:///{tmp_path / 'fleet.db'}") as db:
            async with ingesting(db, broker, Ingest(sessions(nowhere))):
                await publish(
                    broker, *[(topic(wire.Kind.TELEMETRY), telemetry(n), False) for n in (1, 2, 3)]
                )

                async def holding() -> bool:
                    return "holding messages" in str(caplog.text)

                await eventually(holding, "ingest holds the first message")
            # the fleet restarts, its database reachable now; gateways went on publishing
            await publish(broker, (topic(wire.Kind.TELEMETRY), telemetry(4), False))
            async with ingesting(db, broker) as (ingest, _):

                async def all_stored() -> bool:
                    return await db.count(ReceivedBatch) == 4

                await eventually(all_stored, "batches 1-4 stored after the restart")
                assert await db.count(Sample) == 4
                assert ingest.stats()["gaps_opened"] == 0
    finally:
        await nowhere.dispose()
        await asyncio.to_thread(mosquitto.stop)


async def test_ingest_waits_for_a_broker_logging_the_outage_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Until mosquitto listens, the port hangs up on every attempt: ingest keeps trying,
    bounded by its back-off, says so once, and subscribes when the broker is there."""
    caplog.set_level(logging.INFO, logger="fleet.ingest.pipeline")
    port = free_port()
    attempts = 0

    async def hang_up(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        attempts += 1
        writer.close()
        await writer.wait_closed()

    async with database(f"sqlite:///{tmp_path / 'fleet.db'}") as db:
        ingest = Ingest(db.sessions)
        ready = asyncio.Event()
        broker = BrokerUrl(HOST, port)
        task = asyncio.create_task(
            run_ingest(
                ingest,
                broker,
                client_id="fleet",
                ready=ready,
                reconnect_min_s=0.01,
                reconnect_max_s=0.05,
                timeout_s=0.5,
            )
        )
        try:
            server = await asyncio.start_server(hang_up, HOST, port)
            async with server:

                async def tried_often() -> bool:
                    return attempts >= 3

                await eventually(tried_often, "three connection attempts")
            lost = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(lost) == 1, [r.getMessage() for r in lost]
            assert str(broker) in lost[0].getMessage()
            assert not ready.is_set()

            mosquitto = Mosquitto(tmp_path / "mosquitto", port=port)
            await asyncio.to_thread(mosquitto.start)
            try:
                await asyncio.wait_for(ready.wait(), WITHIN_S)
            finally:
                await asyncio.to_thread(mosquitto.stop)
            assert any("back on" in r.getMessage() for r in caplog.records)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


async def test_an_embedded_broker_on_a_taken_port_says_which_address() -> None:
    port = free_port()
    async with EmbeddedBroker(HOST, port):
        with pytest.raises(EmbeddedBrokerError, match=f"{HOST}:{port} did not start"):
            async with EmbeddedBroker(HOST, port):
                pass

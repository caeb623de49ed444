"""The fleet warns at start when its broker has dropped queued messages: a real mosquitto with
``max_queued_messages 100`` holds the fleet's persistent session while the fleet is away and a
gateway publishes 150 batches; mosquitto acknowledges them all and drops 50. The fleet started
again says so in a WARNING naming the settings and the page, and shows the count in /metrics;
before, with nothing dropped, it said nothing and showed 0."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest
from fastapi import FastAPI

from fleet.app import create_app
from fleet.core.broker_check import DROPPED
from fleet.core.settings import Settings
from gateway import wire
from hil_tests.broker import HOST, Mosquitto

pytestmark = [pytest.mark.hil, pytest.mark.fleet]

SITE, GW = "s1", "gw1"
LIMIT, SENT = 100, 150
#: mosquitto's $SYS counters are brought up to date every sys_interval (1 s here)
WITHIN_S = 20.0
METRIC = "doorstep_fleet_broker_dropped_messages"


@asynccontextmanager
async def fleet(settings: Settings) -> AsyncIterator[FastAPI]:
    """The fleet running (its lifespan: ingest subscribed, the broker watched)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(app.state.ingest_ready.wait(), WITHIN_S)
        yield app


async def shown(app: FastAPI, value: float) -> None:
    """Wait until /metrics shows the broker's count ``value``."""
    registry = app.state.ingest.metrics.registry
    deadline = time.monotonic() + WITHIN_S
    while registry.get_sample_value(METRIC) != value:
        assert time.monotonic() < deadline, f"{METRIC} is {registry.get_sample_value(METRIC)}"
        await asyncio.sleep(0.1)


def said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "fleet.core.broker_check"]


async def broker_says(port: int, at_least: int) -> None:
    """Wait until mosquitto's own counter has caught up with what it dropped."""
    deadline = time.monotonic() + WITHIN_S
    async with aiomqtt.Client(HOST, port, identifier="test-sys-reader") as client:
        await client.subscribe(DROPPED)
        async for message in client.messages:
            if int(bytes(message.payload)) >= at_least:  # type: ignore[arg-type]
                return
            assert time.monotonic() < deadline, f"{DROPPED} stays below {at_least}"


async def test_the_fleet_warns_at_start_when_its_broker_dropped_queued_messages(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Mosquitto(tmp_path / "mosquitto", max_queued=LIMIT)
    with broker.config.open("a", encoding="utf-8") as config:
        config.write("sys_interval 1\n")  # $SYS every second rather than every 10
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}",
        mqtt_url=f"mqtt://{HOST}:{broker.port}",
        mqtt_client_id="fleet-under-test",
    )
    with broker, caplog.at_level(logging.WARNING, logger="fleet.core.broker_check"):
        async with fleet(settings) as app:  # the persistent session, nothing dropped yet
            await shown(app, 0.0)
        assert said(caplog) == []

        async with aiomqtt.Client(HOST, broker.port, identifier="gw1") as gateway:
            now = time.time()
            for seq in range(1, SENT + 1):
                reading = wire.Reading(d="pv", p="power", v=seq, q="good", t=now)
                batch = wire.TelemetryBatch(seq=seq, at=now, readings=[reading])
                topic = wire.topic(SITE, GW, wire.Kind.TELEMETRY)
                await gateway.publish(topic, wire.encode(batch), qos=1)  # each one PUBACKed
        await broker_says(broker.port, SENT - LIMIT)

        async with fleet(settings) as app:
            await shown(app, SENT - LIMIT)
        [warning] = said(caplog)
        assert f"has dropped {SENT - LIMIT} queued messages" in warning
        for words in ("max_queued_messages", "persistence true", "docs/operations.md"):
            assert words in warning

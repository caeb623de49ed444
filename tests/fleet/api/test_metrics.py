"""The fleet's ``GET /metrics``, scraped over HTTP the way Prometheus does (an API token), while
gateways' messages are ingested: the counters and histograms move with what was stored,
duplicated and refused, and the MQTT connection state follows a real mosquitto going away and
coming back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from fleet.accounts.actor import cli_actor
from fleet.accounts.tokens import create_token
from fleet.app import create_app
from fleet.core.settings import Settings
from fleet.models import Role, User
from fleet.registry import register_gateway
from gateway import wire
from hil_tests.broker import Mosquitto
from tests.fleet.api_client import add_user, client, fleet_app, send

pytestmark = pytest.mark.fleet

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def viewer_token(app: FastAPI) -> str:
    """An API token of a viewer, as Prometheus would be given."""
    await add_user(app, "prometheus", Role.VIEWER)
    async with app.state.sessions() as session:
        user = await session.scalar(select(User).where(User.name == "prometheus"))
        assert user is not None
        _, secret = await create_token(session, cli_actor(), user, "scrape", Role.VIEWER, None)
        await session.commit()
    return secret


async def scrape(app: FastAPI, token: str) -> Samples:
    async with client(app, token=token) as prometheus:
        answer = await prometheus.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_ingest_counters_move_with_what_gateways_send(fleet_db_url: str) -> None:
    async with fleet_app(fleet_db_url) as app:
        async with app.state.sessions() as session:
            await register_gateway(session, "north", "gw-1")
            await session.commit()
        token = await viewer_token(app)
        async with client(app) as anonymous:
            refused = await anonymous.get("/metrics")
        before = await scrape(app, token)

        now = time.time()
        readings = [
            wire.Reading(d="meter", p=f"p{i}", v=float(i), q="good", t=now - 1) for i in range(5)
        ]
        batch = wire.TelemetryBatch(seq=1, at=now - 1, readings=readings)
        await send(app, "north", "gw-1", batch)
        ingest = app.state.ingest
        duplicate = await ingest.handle(
            wire.topic("north", "gw-1", wire.Kind.TELEMETRY), wire.encode(batch)
        )
        malformed = await ingest.handle(
            wire.topic("north", "gw-1", wire.Kind.TELEMETRY), b"{not json"
        )
        stranger = await ingest.handle(
            wire.topic("north", "gw-9", wire.Kind.TELEMETRY), wire.encode(batch)
        )
        after = await scrape(app, token)

    assert refused.status_code == 401
    assert (duplicate.status, malformed.reason, stranger.reason) == (
        "duplicate", "malformed", "unknown-gateway",
    )  # fmt: skip
    # every reason is there from 0, before any happened
    assert ("doorstep_fleet_ingest_rejections_total", (("reason", "time"),)) in before

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("doorstep_fleet_ingest_readings_total") == 5
    telemetry = {"kind": "telemetry"}
    assert moved("doorstep_fleet_ingest_messages_total", **telemetry, outcome="stored") == 1
    assert moved("doorstep_fleet_ingest_messages_total", **telemetry, outcome="duplicate") == 1
    assert moved("doorstep_fleet_ingest_messages_total", **telemetry, outcome="rejected") == 1
    # a payload that could not be decoded is of no known kind
    assert moved("doorstep_fleet_ingest_messages_total", kind="unknown", outcome="rejected") == 1
    assert moved("doorstep_fleet_ingest_rejections_total", reason="malformed") == 1
    assert moved("doorstep_fleet_ingest_rejections_total", reason="unknown-gateway") == 1
    assert moved("doorstep_fleet_db_write_duration_seconds_count", **telemetry) == 2
    assert moved("doorstep_fleet_db_write_duration_seconds_sum", **telemetry) > 0
    assert moved("doorstep_fleet_ingest_lag_seconds_count") == 1
    assert 0.5 < moved("doorstep_fleet_ingest_lag_seconds_sum") < 60  # stamped 1 s before


async def _until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait (30 s at most) until ``condition`` holds."""
    deadline = time.monotonic() + 30.0
    while not await condition():
        assert time.monotonic() < deadline, f"waited 30 s for: {what}"
        await asyncio.sleep(0.1)


async def test_the_mqtt_connection_state_follows_the_broker(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}"
    with Mosquitto(tmp_path / "broker") as broker:
        mqtt = f"mqtt://127.0.0.1:{broker.port}"
        settings = Settings(database_url=url, mqtt_url=mqtt, mqtt_client_id="fleet-metrics-test")
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            token = await viewer_token(app)
            await asyncio.wait_for(app.state.ingest_ready.wait(), 30)

            async def connected(up: float, times: float) -> bool:
                samples = await scrape(app, token)
                return (
                    value(samples, "doorstep_fleet_mqtt_connected") == up
                    and value(samples, "doorstep_fleet_mqtt_connections_total") == times
                )

            await _until(lambda: connected(1, 1), "connected once")
            broker.stop()
            await _until(lambda: connected(0, 1), "down while the broker is away")
            broker.start()
            await _until(lambda: connected(1, 2), "connected again")

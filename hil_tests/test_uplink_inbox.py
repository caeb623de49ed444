"""Fleet → gateway over a real mosquitto: the gateway hears only its own topics, its standing
reports reach the fleet after any outage, and it acts on every reconnect."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from fleet.core.broker import BrokerUrl
from fleet.core.outbound import Outbound
from gateway import wire
from gateway.uplink.config import UplinkConfig
from gateway.uplink.link import Uplink
from hil_tests.broker import Mosquitto
from hil_tests.uplink_helpers import recording

pytestmark = pytest.mark.hil


def config(port: int) -> UplinkConfig:
    return UplinkConfig(
        broker=f"mqtt://127.0.0.1:{port}",
        batch_interval_s=0.05,
        reconnect_min_s=0.1,
        reconnect_max_s=0.3,
    )


async def until(condition: Callable[[], bool], within: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_gateway_gets_what_the_fleet_sends_it_and_nothing_meant_for_another(
    tmp_path: Path,
) -> None:
    got: list[bytes] = []
    connects = 0

    async def on_command(payload: bytes) -> None:
        got.append(payload)

    async def on_connect() -> None:
        nonlocal connects
        connects += 1

    with Mosquitto(tmp_path / "mq") as mq:
        up = Uplink(config(mq.port), site="s1", gateway="gw-1", state_dir=tmp_path / "st")
        up.inbox.handle(wire.Kind.OTA_COMMAND, on_command)
        up.inbox.on_connect(on_connect)
        fleet = Outbound(BrokerUrl("127.0.0.1", mq.port), client_id="fleet-out")
        async with up, fleet.running():
            await asyncio.wait_for(fleet.connected.wait(), 10)
            await until(lambda: up.inbox.connected and connects == 1, 10, "the gateway's session")
            assert await fleet.send("s1", "gw-2", wire.Kind.OTA_COMMAND, b'{"for":"gw-2"}')
            assert await fleet.send("s2", "gw-1", wire.Kind.OTA_COMMAND, b'{"for":"s2/gw-1"}')
            assert await fleet.send("s1", "gw-1", wire.Kind.OTA_COMMAND, b'{"for":"gw-1"}')
            await until(lambda: bool(got), 10, "the command")
            await asyncio.sleep(0.3)
            assert got == [b'{"for":"gw-1"}']

            mq.stop()  # the broker goes away and comes back: the hook runs again
            await until(lambda: not up.inbox.connected, 10, "the gateway to notice")
            assert not await up.inbox.send(wire.Kind.CONFIG_REPORTED, b"{}")
            mq.start()
            await until(lambda: connects == 2, 20, "the hook after the reconnect")


async def test_a_standing_report_reaches_the_fleet_even_when_given_while_the_broker_was_away(
    tmp_path: Path,
) -> None:
    with Mosquitto(tmp_path / "mq") as mq:
        up = Uplink(config(mq.port), site="s1", gateway="gw-1", state_dir=tmp_path / "st")
        async with up:
            await until(lambda: up.connected, 10, "the gateway's session")
            mq.stop()
            await until(lambda: not up.inbox.connected, 10, "the gateway to notice")
            await up.inbox.report(wire.Kind.CONFIG_REPORTED, b'{"status":"applied","n":1}')
            await up.inbox.report(wire.Kind.CONFIG_REPORTED, b'{"status":"applied","n":2}')
            mq.start()
            await until(lambda: up.inbox.connected, 20, "the reconnect")
            async with recording(mq.port) as fleet:  # a fleet that comes later is told too
                await fleet.wait_for(
                    lambda: bool(fleet.of("config/reported")), within=10, what="the report"
                )
                assert fleet.of("config/reported") == [{"status": "applied", "n": 2}]
                assert fleet.messages[-1].retain
    assert json.loads(up.inbox.latest(wire.Kind.CONFIG_REPORTED) or b"{}")["n"] == 2


async def test_a_failing_handler_is_logged_and_the_next_message_still_arrives(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[bytes] = []

    async def on_command(payload: bytes) -> None:
        if payload == b"bad":
            raise ValueError("cannot read it")
        got.append(payload)

    with Mosquitto(tmp_path / "mq") as mq:
        up = Uplink(config(mq.port), site="s1", gateway="gw-1", state_dir=tmp_path / "st")
        up.inbox.handle(wire.Kind.OTA_COMMAND, on_command)
        fleet = Outbound(BrokerUrl("127.0.0.1", mq.port), client_id="fleet-out")
        async with up, fleet.running():
            await asyncio.wait_for(fleet.connected.wait(), 10)
            await until(lambda: up.inbox.connected, 10, "the gateway's session")
            await fleet.send("s1", "gw-1", wire.Kind.OTA_COMMAND, b"bad")
            await fleet.send("s1", "gw-1", wire.Kind.OTA_COMMAND, b"good")
            await until(lambda: got == [b"good"], 10, "the good command")
    assert "doorstep/v1/s1/gw-1/ota/command" in caplog.text
    assert "cannot read it" in caplog.text

"""The uplink against real brokers: order, the last will, TLS and per-gateway credentials."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from fleet.core.broker import EmbeddedBroker
from gateway.control.alarms import AlarmLog, Severity
from gateway.image import Quality, Sample
from gateway.uplink.config import UplinkConfig
from gateway.uplink.link import Uplink
from hil_tests.broker import Mosquitto, TlsFiles, free_port, make_tls_files
from hil_tests.uplink_helpers import RunnerProcess, recording

pytestmark = pytest.mark.hil

STATE_TOPIC = "doorstep/v1/hil/gw-runner/state"


@pytest.fixture(params=["mosquitto", "embedded"])
async def broker_port(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[int]:
    """A running broker: Debian's mosquitto, or the fleet's embedded amqtt broker."""
    if request.param == "mosquitto":
        with Mosquitto(tmp_path / "mosquitto") as mq:
            yield mq.port
    else:
        async with EmbeddedBroker("127.0.0.1", free_port()) as embedded:
            yield embedded.port


def contiguous(seqs: list[int]) -> bool:
    return seqs == list(range(1, len(seqs) + 1))


async def test_a_gateway_reports_in_order_and_its_last_will_says_offline_when_killed(
    broker_port: int, tmp_path: Path
) -> None:
    runner = RunnerProcess(
        f"mqtt://127.0.0.1:{broker_port}", tmp_path / "state", tmp_path / "runner.log"
    )
    async with recording(broker_port) as rec:
        runner.start()
        try:
            await rec.wait_for(
                lambda: len(rec.of("telemetry")) >= 5 and len(rec.of("events")) >= 3,
                within=30,
                what="telemetry and alarm events from the runner",
            )
            states = rec.of("state")
            assert states[0]["status"] == "online"
            assert states[0]["devices"] == {"lift-1": "ELV-24476", "charger-1": "EVSE-HEC"}
            assert rec.of("health"), "health messages"
        finally:
            runner.kill()
        await rec.wait_for(
            lambda: rec.of("state")[-1]["status"] == "offline",
            within=10,
            what="the last will",
        )
    assert contiguous(rec.seqs("telemetry")), rec.seqs("telemetry")
    assert contiguous(rec.seqs("events")), rec.seqs("events")
    ids = [e["id"] for batch in rec.of("events") for e in batch["events"]]
    assert ids == sorted(set(ids)), "each alarm event once, in order"
    async with recording(broker_port) as late:  # a fleet that connects later is told too
        await late.wait_for(lambda: bool(late.of("state")), within=5, what="retained state")
        assert late.messages[0].retain
        assert late.of("state")[-1]["status"] == "offline"


# -- TLS and credentials -------------------------------------------------------------------------

USERS = {"gw-01": "gw-01-secret-password", "fleet": "fleet-secret-password"}


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, TlsFiles]]:
    files = make_tls_files(tmp_path / "pki")
    with Mosquitto(tmp_path / "mosquitto", tls=files, users=USERS) as mq:
        yield mq, files


def tls_config(port: int, ca: Path, password_file: Path) -> UplinkConfig:
    return UplinkConfig(
        broker=f"mqtts://127.0.0.1:{port}",
        username="gw-01",
        password_file=password_file,
        ca_file=ca,
        batch_interval_s=0.05,
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
    )


async def feed(uplink: Uplink, n: int) -> None:
    for i in range(n):
        uplink.on_sample("meter", "w", Sample(float(i), 0.0, Quality.GOOD))
        await asyncio.sleep(0.01)
    alarm = AlarmLog().raise_("hot", Severity.MAJOR, "i4", "too hot", device="meter")
    assert alarm is not None
    uplink.alarm(alarm)
    await uplink.flush()


async def test_tls_with_a_private_ca_and_a_per_gateway_password(
    tls_broker: tuple[Mosquitto, TlsFiles], tmp_path: Path
) -> None:
    mq, files = tls_broker
    secret = tmp_path / "password"
    secret.write_text(USERS["gw-01"] + "\n", encoding="utf-8")
    config = tls_config(mq.port, files.ca, secret)
    fleet_tls = ssl.create_default_context(cafile=files.ca)
    async with (
        recording(mq.port, tls_context=fleet_tls, username="fleet", password=USERS["fleet"]) as rec,
        Uplink(config, site="s", gateway="gw-01", state_dir=tmp_path / "st") as up,
    ):
        await feed(up, 20)
        await rec.wait_for(lambda: bool(rec.of("events")), within=10, what="the alarm")
        await rec.wait_for(lambda: up.depth == 0, within=10, what="an empty outbox")
    values = [r["v"] for b in rec.of("telemetry") for r in b["readings"]]
    assert values == sorted(values)
    assert values[-1] == 19.0
    assert rec.of("events")[0]["events"][0]["key"] == "hot"


async def test_a_wrong_password_is_a_clear_error_and_the_outbox_keeps_everything(
    tls_broker: tuple[Mosquitto, TlsFiles], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mq, files = tls_broker
    secret = tmp_path / "password"
    secret.write_text("not-the-password\n", encoding="utf-8")
    config = tls_config(mq.port, files.ca, secret)
    state = tmp_path / "st"
    with caplog.at_level(logging.ERROR, logger="gateway.uplink.link"):
        async with Uplink(config, site="s", gateway="gw-01", state_dir=state) as up:
            await feed(up, 5)
            deadline = asyncio.get_running_loop().time() + 10
            while "refused the credentials" not in caplog.text:
                assert asyncio.get_running_loop().time() < deadline, "no credentials error"
                await asyncio.sleep(0.05)
            assert up.depth == 2  # one telemetry batch and the alarm
            assert up.dropped == 0
    assert "refused the credentials of gw-01" in caplog.text
    assert "uplink.username" in caplog.text
    # the right password later: everything kept is delivered
    secret.write_text(USERS["gw-01"] + "\n", encoding="utf-8")
    async with Uplink(config, site="s", gateway="gw-01", state_dir=state) as up:
        assert up.depth == 2
        deadline = asyncio.get_running_loop().time() + 10
        while up.depth:
            assert asyncio.get_running_loop().time() < deadline, "outbox not drained"
            await asyncio.sleep(0.05)

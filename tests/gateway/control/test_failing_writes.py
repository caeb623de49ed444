"""A command write that keeps failing: tried again now and then, not on every cycle, and told
once with a count, not once per attempt (issue 12.3). On a virtual clock: the writer "takes"
its bus timeout by ``asyncio.sleep``."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.control.actuator import PRIORITY_LIFE_SAFETY, RETRY_FAILED_S, Actuator
from gateway.control.alarms import AlarmLog
from gateway.control.engine import InterlockEngine
from gateway.control.loop import STILL_FAILING_LOG_S, ControlConfig, Supervisor
from gateway.control.watchdogs import WatchdogKeeper
from gateway.devices.codec import Value
from gateway.errors import GatewayError
from gateway.image import ProcessImage
from tests.gateway import virtual_time

TIMEOUT_S = 0.25  # what a write to a dead device costs on the bus


class Device:
    """The lift's out-of-service register, answering or not."""

    def __init__(self, image: ProcessImage) -> None:
        self.image = image
        self.answering = False
        self.attempts = 0

    async def write(self, device: str, point: str, value: Value) -> None:
        self.attempts += 1
        await asyncio.sleep(TIMEOUT_S)
        if not self.answering:
            raise GatewayError(f"{device}: no answer within {TIMEOUT_S} s")
        self.image.update(device, point, value)


async def _run(seconds_dead: float, seconds_after: float) -> tuple[Device, Supervisor]:
    clock = asyncio.get_running_loop().time
    image = ProcessImage(clock)
    image.declare("lift", "req_out_of_service", 10.0)
    image.update("lift", "req_out_of_service", 0)  # read back once: writes may go out
    actuator = Actuator(image)
    engine = InterlockEngine([], {}, image, actuator, AlarmLog(None))
    device = Device(image)
    actuator.demand("trapped", "lift", "req_out_of_service", 1, PRIORITY_LIFE_SAFETY, limit=False)
    config = ControlConfig(period_ms=50)
    async with Supervisor(
        config, engine, actuator, WatchdogKeeper(image), device.write, clock=clock
    ) as supervisor:
        await asyncio.sleep(seconds_dead)
        device.answering = True
        await asyncio.sleep(seconds_after)
    return device, supervisor


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gateway.control.loop"]


def test_a_failing_write_is_logged_once_and_its_recovery_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    device, supervisor = virtual_time.run(_run(seconds_dead=30.0, seconds_after=2.0))
    lines = _lines(caplog)
    failed = supervisor.write_errors
    assert lines[0].startswith("lift.req_out_of_service := 1 failed: lift: no answer")
    went = f"lift.req_out_of_service := 1 went through after {failed} failed attempt(s)"
    assert lines[1:] == [went]
    # tried again about once a second, not on every 50 ms cycle nor back to back
    per_second = 1 / (RETRY_FAILED_S + TIMEOUT_S)
    assert 0.8 * 30 * per_second <= failed <= 30 * per_second + 1
    assert device.attempts == failed + 1, "written once it answers, and not again"


def test_a_write_failing_for_long_is_recalled_with_its_count_every_so_often(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    virtual_time.run(_run(seconds_dead=2.5 * STILL_FAILING_LOG_S, seconds_after=1.0))
    lines = _lines(caplog)
    still = [line for line in lines if "still failing" in line]
    assert len(lines) == 4
    assert len(still) == 2
    counts = [int(line.split("still failing: ")[1].split()[0]) for line in still]
    assert counts[0] < counts[1]

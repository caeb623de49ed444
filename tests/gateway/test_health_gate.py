"""The health window's verdicts, each with the reason a person reads (a running gateway's
parts stand in: the real window runs on the rig in hil_tests/test_desired_config.py)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any, cast

import pytest

from gateway.bus.stats import BusStats
from gateway.health_gate import HealthGate
from gateway.runtime import Gateway


class Site:
    def __init__(self) -> None:
        self.offline: set[str] = set()
        self.loop = SimpleNamespace(skipped=0)
        self.late = False
        self.sio = SimpleNamespace(device="sio", claimed=True)
        self.buses = {"b1": BusStats(), "b2": BusStats()}
        self.uplink = SimpleNamespace(connected=True)

    def gateway(self) -> Gateway:
        supervisor = SimpleNamespace(
            loop=self.loop,
            healthy=lambda: not self.late,
            config=SimpleNamespace(unhealthy_after_ms=500.0),
            safety_ios=[self.sio],
        )
        image = SimpleNamespace(offline=lambda d: d in self.offline)
        schedulers = {name: SimpleNamespace(stats=s) for name, s in self.buses.items()}
        gw: Any = SimpleNamespace(
            schedulers=schedulers,
            pollers={"meter": object(), "charger": object()},
            image=image,
            supervisor=supervisor,
            uplink=self.uplink,
        )
        return cast(Gateway, gw)

    def poll(self, bus: str) -> None:
        self.buses[bus].transactions += 1
        self.buses[bus].last_ok_at = time.monotonic()


async def verdict(site: Site, during: Any = None, **kwargs: Any) -> str:
    gate = HealthGate(site.gateway(), 0.3, every_s=0.02)
    if during is not None:

        async def later() -> None:
            await asyncio.sleep(0.05)
            during()

        task = asyncio.create_task(later())
        result = await gate.watch(**kwargs)
        await task
    else:
        result = await gate.watch(**kwargs)
    return str(result)


async def test_healthy_when_the_changed_bus_polls_and_nothing_else_goes_wrong() -> None:
    site = Site()
    assert await verdict(site, lambda: site.poll("b1"), changed_buses=["b1"]) == "healthy"


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (lambda s: None, "bus 'b1' did not complete a single transaction in the 0.3 s"),
        (lambda s: setattr(s.loop, "skipped", 1), "the control loop skipped 1 cycle(s)"),
        (lambda s: setattr(s, "late", True), "the control loop ran more than 500 ms late"),
        (lambda s: s.offline.add("meter"), "meter stopped answering (communication lost)"),
        (lambda s: setattr(s.sio, "claimed", False), "sio (SIO-1) is not claimed"),
    ],
)
async def test_unhealthy_says_why(fault: Any, reason: str) -> None:
    site = Site()

    def during() -> None:
        if "b1" not in reason:
            site.poll("b1")
        fault(site)

    said = await verdict(site, during, changed_buses=["b1"], unchanged_devices=["meter"])
    assert said.startswith("unhealthy: ")
    assert reason in said


async def test_a_broker_never_reached_in_the_window_is_unhealthy() -> None:
    site = Site()
    site.uplink.connected = False
    said = await verdict(site, lambda: site.poll("b1"), changed_buses=["b1"])
    assert "the broker was not reachable" in said


async def test_after_a_restart_every_bus_must_poll() -> None:
    site = Site()
    said = await verdict(site, lambda: site.poll("b1"))
    assert "bus 'b2' did not complete a single transaction" in said

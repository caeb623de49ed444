"""A bus scheduler over the in-memory transport, with small device profiles, for the bus tests.

The scheduler reads ``time.monotonic()`` itself, so these tests run on the real clock: think
times are 0 unless a test needs a transaction to last, and the breaker's timeouts and
back-off are tens of milliseconds (:data:`TIGHT`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from gateway.bus.breaker import BreakerPolicy, CircuitBreaker
from gateway.bus.coalesce import CostModel
from gateway.bus.config import Device, PollPeriods
from gateway.bus.poller import DevicePoller
from gateway.bus.scheduler import BusScheduler
from gateway.devices.profile import Profile, parse_profile
from gateway.image import ProcessImage, Quality

FAST = PollPeriods(safety=0.02, telemetry=0.05, slow=0.5)
#: Periods a whole first cycle of a few devices fits in with room to spare.
CALM = PollPeriods(safety=0.2, telemetry=0.5, slow=1.0)
TIGHT = BreakerPolicy(
    initial_timeout_s=0.02,
    min_timeout_s=0.01,
    max_timeout_s=0.02,
    failures_to_open=3,
    retries=1,
    backoff_initial_s=0.3,
    backoff_max_s=0.3,
    jitter=0.0,
)

#: A device with every table, a gap inside a block, and a point of each poll class (points
#: without one are polled as telemetry).
PANEL = parse_profile(
    """
model = "TEST-PANEL"
kind = "meter"
description = "a small device for the bus tests"
points = [
  { name = "fire_loop", table = "discrete", address = 0, type = "bit", poll = "safety" },
  { name = "door_closed", table = "discrete", address = 1, type = "bit", poll = "safety" },
  { name = "state", table = "input", address = 0, type = "u16", poll = "safety" },
  { name = "temperature", table = "input", address = 1, type = "i16", scale = 0.1 },
  { name = "energy", table = "input", address = 2, type = "u32" },
  { name = "power", table = "input", address = 5, type = "f32" },
  { name = "relay", table = "coil", address = 3, type = "bit" },
  { name = "setpoint", table = "holding", address = 10, type = "u16", scale = 0.1 },
  { name = "serial", table = "holding", address = 100, type = "string", length = 4, poll = "slow" },
  { name = "command", table = "holding", address = 20, type = "u16", access = "w" },
]
""",
    "TEST-PANEL.toml",
)


def spread_profile(blocks: int) -> Profile:
    """A device whose telemetry points lie too far apart to share a read: one block each."""
    points = ",\n".join(
        f'{{ name = "t{i}", table = "holding", address = {200 * i}, type = "u16" }}'
        for i in range(blocks)
    )
    text = f"""
model = "TEST-SPREAD"
kind = "meter"
description = "telemetry in {blocks} separate blocks"
points = [
  {{ name = "alarm", table = "discrete", address = 0, type = "bit", poll = "safety" }},
  {{ name = "command", table = "holding", address = 1, type = "u16", access = "w" }},
  {points},
]
"""
    return parse_profile(text, "TEST-SPREAD.toml")


def poller(
    name: str,
    profile: Profile,
    unit_id: int,
    image: ProcessImage,
    *,
    periods: PollPeriods = FAST,
    policy: BreakerPolicy = TIGHT,
    cost: CostModel | None = None,
) -> DevicePoller:
    """A placed poller for one device, its breaker's jitter seeded; planned for Modbus TCP
    unless ``cost`` says otherwise."""
    device = Device(name=name, profile=profile.model, bus="memory", unit_id=unit_id)
    breaker = CircuitBreaker(policy, random.Random(unit_id))
    p = DevicePoller(device, profile, periods, image, cost or CostModel.for_tcp(), breaker)
    p.place(profile, time.monotonic())
    return p


@asynccontextmanager
async def running(scheduler: BusScheduler) -> AsyncIterator[BusScheduler]:
    """The scheduler's transport opened and the scheduler serving it until the block ends."""
    async with scheduler.transport, asyncio.TaskGroup() as tg:
        task = tg.create_task(scheduler.run(), name=f"bus:{scheduler.name}")
        try:
            yield scheduler
        finally:
            task.cancel()


async def until(predicate: Callable[[], bool], what: str, within: float = 3.0) -> None:
    """Wait (on the real clock, checking every millisecond) until ``predicate()`` holds."""
    try:
        async with asyncio.timeout(within):
            while not predicate():  # noqa: ASYNC110 - what is awaited has no event to wait on
                await asyncio.sleep(0.001)
    except TimeoutError:
        raise AssertionError(f"not within {within} s: {what}") from None


def all_good(image: ProcessImage, device: str) -> bool:
    return all(s.quality is Quality.GOOD for _, _, s in image.points(device))

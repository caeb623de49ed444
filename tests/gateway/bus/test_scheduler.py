"""The bus scheduler on an in-memory bus: what goes first, one transaction at a time, how
long a command waits, and what a dead unit costs its neighbours."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.bus.breaker import BreakerState
from gateway.bus.config import PollPeriods
from gateway.bus.memory import MemoryTransport, MemoryUnit, Transaction
from gateway.bus.pdu import Write
from gateway.bus.poller import DevicePoller
from gateway.bus.scheduler import BusScheduler
from gateway.devices.profile import PollClass, Table
from gateway.image import ProcessImage, Quality
from tests.gateway.bus.memory_bus import (
    CALM,
    PANEL,
    TIGHT,
    all_good,
    poller,
    running,
    spread_profile,
    until,
)

WRITE_ONE = 6


def classes_of(pollers: list[DevicePoller]) -> dict[tuple[int, int, int], PollClass | None]:
    """The poll class of a read, keyed like the transport's log by where its block starts
    (the address of the block's first point)."""
    return {
        (p.unit_id, point.table.read_function, point.address): point.poll
        for p in pollers
        for point in p.profile.points
        if point.address is not None
    }


def most_polls_between_safety_reads(log: list[Transaction]) -> int:
    """The longest run of transactions without a safety-class read (discrete inputs) among
    them, the one after the last safety read included."""
    return max(len(run) for run in "".join("s" if t.function == 2 else "." for t in log).split("s"))


async def test_commands_go_first_then_safety_reads_then_telemetry_then_slow_reads() -> None:
    image = ProcessImage()
    pollers = [poller(f"panel-{u}", PANEL, u, image, periods=CALM) for u in (1, 2, 3)]
    bus = MemoryTransport(units={u: MemoryUnit() for u in (1, 2, 3)})
    scheduler = BusScheduler(bus, pollers)
    command = asyncio.create_task(scheduler.request("panel-2", Write(Table.HOLDING, 20, (1,))))
    await asyncio.sleep(0)  # queued before the bus starts
    async with running(scheduler):
        await until(lambda: all(all_good(image, p.name) for p in pollers), "a whole cycle")
        await command
    first_cycle = bus.log[: 1 + 3 * 6]
    assert (first_cycle[0].unit_id, first_cycle[0].function) == (2, WRITE_ONE)
    cls = classes_of(pollers)
    order = [cls[(t.unit_id, t.function, t.address)] for t in first_cycle[1:]]
    assert order == [PollClass.SAFETY] * 6 + [PollClass.TELEMETRY] * 9 + [PollClass.SLOW] * 3


async def test_safety_reads_keep_their_period_inside_a_long_telemetry_cycle() -> None:
    image = ProcessImage()
    periods = PollPeriods(safety=0.02, telemetry=1.0, slow=5.0)
    device = poller("spread", spread_profile(blocks=30), 1, image, periods=periods)
    bus = MemoryTransport(units={1: MemoryUnit(think_s=0.005)})  # 150 ms of telemetry
    async with running(BusScheduler(bus, [device])):
        await until(lambda: all_good(image, "spread"), "the first telemetry cycle")
    # a safety read falls due every 20 ms; a transaction takes at least 5 ms, so no more
    # than four telemetry reads, and the one on the wire, may come between two of them
    assert most_polls_between_safety_reads(bus.log) <= 5


@pytest.mark.xfail(
    strict=True,
    reason="scheduler._aged_priority raises a class that waited a period to the safety "
    "class's own priority, and the tie goes to the older cycle: on an overloaded bus the aged "
    "telemetry cycle runs to its end ahead of every safety read",
)
async def test_on_an_overloaded_bus_aged_telemetry_still_never_goes_ahead_of_safety_reads() -> None:
    image = ProcessImage()
    periods = PollPeriods(safety=0.02, telemetry=0.05, slow=5.0)  # telemetry cannot keep up
    device = poller("spread", spread_profile(blocks=30), 1, image, periods=periods)
    bus = MemoryTransport(units={1: MemoryUnit(think_s=0.005)})
    async with running(BusScheduler(bus, [device])):
        await until(lambda: all_good(image, "spread"), "the first telemetry cycle")
    assert most_polls_between_safety_reads(bus.log) <= 5


async def test_a_command_waits_at_most_one_transaction_behind_a_queue_of_polls() -> None:
    image = ProcessImage()
    device = poller("spread", spread_profile(blocks=40), 1, image)  # always a queue of polls
    bus = MemoryTransport(units={1: MemoryUnit(think_s=0.002)})
    waits = []
    async with running(BusScheduler(bus, [device])) as scheduler:
        for value in range(8):
            await asyncio.sleep(0.007)  # land somewhere inside a busy cycle
            queued = len(device.cycles[PollClass.TELEMETRY].pending)
            done, in_flight = len(bus.log), bus.in_flight
            await scheduler.request("spread", Write(Table.HOLDING, 1, (value,)))
            sent = next(i for i, t in enumerate(bus.log) if t.function == WRITE_ONE and i >= done)
            waits.append((queued, in_flight, sent - done))
    assert len([q for q, _, _ in waits if q >= 5]) >= 4, (
        f"no queue of polls to wait behind: {waits}"
    )
    # what went out between the request and the write: the transaction already on the wire
    assert all(ahead <= in_flight <= 1 for _, in_flight, ahead in waits), waits


async def test_the_bus_never_has_two_transactions_in_flight() -> None:
    image = ProcessImage()
    pollers = [poller(f"panel-{u}", PANEL, u, image) for u in (1, 2, 3)]
    bus = MemoryTransport(units={u: MemoryUnit(think_s=0.001) for u in (1, 2, 3)})
    async with running(BusScheduler(bus, pollers)) as scheduler:
        await asyncio.gather(
            *(
                scheduler.request(f"panel-{1 + i % 3}", Write(Table.HOLDING, 20, (i,)))
                for i in range(30)
            )
        )
        await until(lambda: len(bus.log) >= 100, "a hundred transactions")
    assert bus.max_in_flight == 1
    assert len([t for t in bus.log if t.function == WRITE_ONE]) == 30


async def test_independent_buses_carry_transactions_at_the_same_time() -> None:
    image = ProcessImage()
    a, b = (poller(name, PANEL, 1, image, periods=CALM) for name in "ab")
    bus_a = MemoryTransport("a", {1: MemoryUnit(think_s=0.005)})
    bus_b = MemoryTransport("b", {1: MemoryUnit(think_s=0.005)})
    async with running(BusScheduler(bus_a, [a])), running(BusScheduler(bus_b, [b])):
        await until(lambda: all_good(image, "a") and all_good(image, "b"), "both devices read")
    overlapping = [
        (x, y)
        for x in bus_a.log
        for y in bus_b.log
        if x.at < y.at + y.busy_s and y.at < x.at + x.busy_s
    ]
    assert len(overlapping) >= len(bus_a.log) // 2, "one bus waited for the other"


# -- a dead unit among healthy ones -----------------------------------------------------------


async def _with_a_dead_unit(bus: MemoryTransport, pollers: list[DevicePoller]) -> DevicePoller:
    """Let every unit answer once, then kill unit 4 and wait for its breaker to open."""
    dead = pollers[3]
    await until(lambda: all(all_good(p.image, p.name) for p in pollers), "every unit read")
    bus.units[dead.unit_id].dead = True
    await until(lambda: dead.breaker.state is BreakerState.OPEN, "the dead unit's breaker open")
    return dead


def _bus_of_four() -> tuple[MemoryTransport, list[DevicePoller], ProcessImage]:
    image = ProcessImage()
    pollers = [poller(f"panel-{u}", PANEL, u, image) for u in (1, 2, 3, 4)]
    return MemoryTransport(units={u: MemoryUnit() for u in (1, 2, 3, 4)}), pollers, image


async def test_a_dead_unit_is_marked_offline_and_then_costs_one_probe_per_back_off() -> None:
    bus, pollers, image = _bus_of_four()
    async with running(BusScheduler(bus, pollers)):
        dead = await _with_a_dead_unit(bus, pollers)
        assert {s.quality for _, _, s in image.points("panel-4")} == {Quality.OFFLINE}
        opened, seen = time.monotonic(), len(bus.log)
        healthy_before = {p.name: p.stats.transactions for p in pollers[:3]}
        await asyncio.sleep(0.25)  # less than the 0.3 s back-off: no probe yet
        window = bus.log[seen:]
        elapsed = time.monotonic() - opened
    assert [t for t in window if t.unit_id == dead.unit_id] == [], "sent to an open breaker"
    # three failed transactions of two attempts each opened it: six timeouts, no more
    timeouts = [t for t in bus.log if t.outcome == "timeout"]
    assert len(timeouts) == TIGHT.failures_to_open * (1 + TIGHT.retries)
    # the healthy units kept their safety class's pace (two reads per 20 ms cycle) meanwhile
    for p in pollers[:3]:
        assert p.stats.transactions - healthy_before[p.name] >= 0.5 * 2 * elapsed / 0.02, p.name
        assert all_good(image, p.name)


async def test_a_dead_unit_is_probed_after_its_back_off_and_recovers_when_it_answers() -> None:
    bus, pollers, image = _bus_of_four()
    async with running(BusScheduler(bus, pollers)):
        dead = await _with_a_dead_unit(bus, pollers)
        await until(lambda: dead.breaker.state is BreakerState.HALF_OPEN, "a probe", within=1.0)
        await until(lambda: dead.breaker.state is BreakerState.OPEN, "the probe failing")
        probes = [t for t in bus.log if t.unit_id == dead.unit_id and t.outcome == "timeout"]
        assert len(probes) == TIGHT.failures_to_open * (1 + TIGHT.retries) + 1, "one probe"
        bus.units[dead.unit_id].put(PANEL.point("state"), 2)  # what it says when it is back
        bus.units[dead.unit_id].dead = False
        await until(lambda: dead.breaker.state is BreakerState.CLOSED, "recovery", within=1.5)
        await until(lambda: all_good(image, "panel-4"), "every point of the unit GOOD again")
    assert image.value("panel-4", "state") == 2
    assert not image.offline("panel-4")

"""A device poller on an in-memory bus: block reads, decoding into the image, exception 02."""

from __future__ import annotations

from gateway.bus.memory import MemoryTransport, MemoryUnit
from gateway.bus.scheduler import BusScheduler
from gateway.devices.codec import Value
from gateway.devices.profile import PollClass, Table
from gateway.image import ProcessImage, Quality
from tests.gateway.bus.memory_bus import PANEL, all_good, poller, running, until

READ_INPUTS, READ_HOLDING = 4, 3

VALUES: dict[str, Value] = {
    "fire_loop": True,
    "door_closed": False,
    "state": 2,
    "temperature": -12.5,
    "energy": 70_000,
    "power": 1234.5,
    "relay": True,
    "setpoint": 16.0,
    "serial": "SN42ABCD",
}


def panel_unit() -> MemoryUnit:
    unit = MemoryUnit()
    for name, value in VALUES.items():
        unit.put(PANEL.point(name), value)
    return unit


def blocks(bus: MemoryTransport, unit_id: int = 1) -> set[tuple[int, int, int]]:
    return {(t.function, t.address, t.count) for t in bus.log if t.unit_id == unit_id}


async def test_one_cycle_reads_each_class_and_table_in_one_block_and_fills_the_image() -> None:
    image = ProcessImage()
    panel = poller("panel", PANEL, 1, image)
    bus = MemoryTransport(units={1: panel_unit()})
    async with running(BusScheduler(bus, [panel])):
        await until(lambda: all_good(image, "panel"), "every point GOOD")
    assert {p: image.value("panel", p) for p in VALUES} == VALUES
    assert image.get("panel", "power").quality is Quality.GOOD
    # safety: the two inputs, the state; telemetry: inputs 1..6 across the unused
    # register 4, the relay coil, the setpoint; slow: the serial number
    assert blocks(bus) == {
        (2, 0, 2),
        (4, 0, 1),
        (4, 1, 6),
        (1, 3, 1),
        (3, 10, 1),
        (3, 100, 4),
    }


async def test_a_write_only_point_is_never_read() -> None:
    image = ProcessImage()
    bus = MemoryTransport(units={1: panel_unit()})
    async with running(BusScheduler(bus, [poller("panel", PANEL, 1, image)])):
        await until(lambda: len(bus.log) >= 30, "a few cycles")
    assert not any(t.address <= 20 < t.address + t.count for t in bus.log if t.function == 3)


async def test_a_new_value_at_the_device_reaches_the_image_in_its_next_cycle() -> None:
    image = ProcessImage()
    unit = panel_unit()
    bus = MemoryTransport(units={1: unit})
    async with running(BusScheduler(bus, [poller("panel", PANEL, 1, image)])):
        await until(lambda: all_good(image, "panel"), "every point GOOD")
        unit.put(PANEL.point("fire_loop"), False)
        unit.put(PANEL.point("temperature"), 61.3)
        await until(lambda: image.value("panel", "fire_loop") is False, "fire loop open")
        await until(lambda: image.value("panel", "temperature") == 61.3, "new temperature")


async def test_exception_02_inside_a_block_splits_it_and_the_split_is_remembered() -> None:
    image = ProcessImage()
    unit = panel_unit()
    unit.refuse(Table.INPUT, 4)  # the unused register inside the telemetry block
    bus = MemoryTransport(units={1: unit})
    panel = poller("panel", PANEL, 1, image)
    async with running(BusScheduler(bus, [panel])):
        await until(lambda: all_good(image, "panel"), "every point GOOD")
        seen = len(bus.log)
        await until(lambda: len(bus.log) >= seen + 40, "several more cycles")
    refused = [t for t in bus.log if t.outcome == "exception"]
    assert [(t.function, t.address, t.count) for t in refused] == [(READ_INPUTS, 1, 6)]
    assert image.value("panel", "power") == VALUES["power"]
    assert image.value("panel", "energy") == VALUES["energy"]
    after = {(t.function, t.address, t.count) for t in bus.log[bus.log.index(refused[0]) + 1 :]}
    assert (READ_INPUTS, 1, 6) not in after
    assert {(READ_INPUTS, 1, 1), (READ_INPUTS, 2, 2), (READ_INPUTS, 5, 2)} <= after
    assert panel.stats.exceptions == 1
    assert panel.unreadable_points == set(), "a point was given up on although it reads fine"


async def test_after_exception_02_the_parts_and_the_rest_of_the_cycle_are_read_at_once() -> None:
    image = ProcessImage()
    unit = panel_unit()
    unit.refuse(Table.INPUT, 4)
    bus = MemoryTransport(units={1: unit})
    async with running(BusScheduler(bus, [poller("panel", PANEL, 1, image)])):
        await until(lambda: all_good(image, "panel"), "every point GOOD")
    reads = [(t.function, t.address, t.count) for t in bus.log]
    refused = reads.index((READ_INPUTS, 1, 6))
    assert set(reads[refused + 1 : refused + 4]) == {(4, 1, 1), (4, 2, 2), (4, 5, 2)}
    # the slow class started with the others; its read must not wait a whole slow period
    assert bus.log[reads.index((READ_HOLDING, 100, 4))].at - bus.log[0].at < 0.02


async def test_an_exception_02_leaves_the_cycle_durations_true() -> None:
    image = ProcessImage()
    unit = panel_unit()
    unit.refuse(Table.INPUT, 4)
    panel = poller("panel", PANEL, 1, image)
    async with running(BusScheduler(MemoryTransport(units={1: unit}), [panel])):
        await until(lambda: all_good(image, "panel"), "every point GOOD")
    longest = panel.cycles[PollClass.TELEMETRY].durations.percentile(100)
    assert longest is not None
    assert longest < 1.0, f"a telemetry cycle of {longest:.0f} s"


async def test_a_point_the_device_refuses_on_its_own_reads_bad_and_is_not_asked_again() -> None:
    image = ProcessImage()
    unit = panel_unit()
    unit.refuse(Table.HOLDING, 10)  # the setpoint
    bus = MemoryTransport(units={1: unit})
    panel = poller("panel", PANEL, 1, image)
    async with running(BusScheduler(bus, [panel])):
        await until(lambda: "setpoint" in panel.unreadable_points, "setpoint given up")
        seen = len(bus.log)
        await until(lambda: len(bus.log) >= seen + 40, "several more cycles")
    assert image.get("panel", "setpoint").quality is Quality.BAD
    assert image.value("panel", "temperature") == VALUES["temperature"]
    assert [t.address for t in bus.log if t.outcome == "exception"] == [10]
    assert panel.stats.exceptions == 1


async def test_a_corrupt_response_is_retried_and_never_decoded() -> None:
    image = ProcessImage()
    unit = panel_unit()
    bus = MemoryTransport(units={1: unit})
    panel = poller("panel", PANEL, 1, image)
    async with running(BusScheduler(bus, [panel])):
        await until(lambda: all_good(image, "panel"), "every point GOOD")
        unit.put(PANEL.point("state"), 1)
        unit.corrupt_next = 1
        await until(lambda: image.value("panel", "state") == 1, "the new state")
    assert panel.stats.crc_errors == 1
    assert panel.stats.retries == 1
    corrupt = next(i for i, t in enumerate(bus.log) if t.outcome == "corrupt")
    retry = bus.log[corrupt + 1]
    assert (retry.function, retry.address, retry.outcome) == (
        bus.log[corrupt].function,
        bus.log[corrupt].address,
        "answered",
    ), "the retry was not the same request, sent at once"

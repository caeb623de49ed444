"""A device poller on an in-memory bus: block reads, decoding into the image, exception 02."""

from __future__ import annotations

import pytest

from gateway.bus.coalesce import CostModel
from gateway.bus.memory import MemoryTransport, MemoryUnit
from gateway.bus.scheduler import BusScheduler
from gateway.devices.codec import Value
from gateway.devices.profile import PollClass, Table, parse_profile
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


CHARGER = parse_profile(
    """
model = "TEST-CHARGER"
kind = "charger"
description = "a charger whose current, power and state belong together"
points = [
  { name = "state", table = "input", address = 0, type = "u16", poll = "safety", group = "ev" },
  { name = "current", table = "input", address = 1, type = "u16", poll = "safety", group = "ev" },
  { name = "temperature", table = "input", address = 2, type = "i16", poll = "safety" },
  { name = "power", table = "input", address = 60, type = "u16", group = "ev" },
  { name = "frequency", table = "input", address = 61, type = "u16" },
]
""",
    "charger.toml",
)


def charger_unit() -> MemoryUnit:
    unit = MemoryUnit()
    for name, value in {"state": 2, "current": 16, "temperature": 30, "power": 3700}.items():
        unit.put(CHARGER.point(name), value)
    unit.put(CHARGER.point("frequency"), 50)
    return unit


async def test_points_read_together_come_from_one_request_and_one_moment() -> None:
    image = ProcessImage()
    unit = charger_unit()
    bus = MemoryTransport(units={1: unit})
    # on a 9600-baud line 58 registers between current and power cost more than a second
    # request: only the group keeps them in one
    charger = poller("evse", CHARGER, 1, image, cost=CostModel.for_rtu(9600))
    async with running(BusScheduler(bus, [charger])):
        await until(lambda: all_good(image, "evse"), "every point GOOD")
        unit.put(CHARGER.point("current"), 8)
        unit.put(CHARGER.point("power"), 1850)
        await until(lambda: image.value("evse", "current") == 8, "the new current")
        current, power = image.get("evse", "current"), image.get("evse", "power")
    # the power is read with the current (60 registers apart, one request), never on its own
    assert power.value == 1850
    assert power.at == current.at
    grouped = [t for t in bus.log if t.address <= 60 < t.address + t.count]
    assert grouped
    assert all((t.function, t.address, t.count) == (4, 0, 61) for t in grouped)
    assert CHARGER.point("power").poll is PollClass.SAFETY  # at the group's fastest class


async def test_a_group_the_device_refuses_to_read_at_once_is_read_in_pieces_and_said_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    image = ProcessImage()
    unit = charger_unit()
    unit.refuse(Table.INPUT, 30)  # a hole the profile did not know of, inside the group
    bus = MemoryTransport(units={1: unit})
    async with running(BusScheduler(bus, [poller("evse", CHARGER, 1, image)])):
        await until(lambda: all_good(image, "evse"), "every point GOOD")
    assert image.value("evse", "power") == 3700  # still read
    said = [r.getMessage() for r in caplog.records if "read in pieces" in r.getMessage()]
    assert said == [
        "evse (unit 1): group 'ev' is read in pieces: the device refuses one read "
        "across it (exception 02); its values may come from different moments"
    ]

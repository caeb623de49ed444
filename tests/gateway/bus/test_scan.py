"""The bus scan over the in-memory bus: who answers, what each says it is, reads only."""

from __future__ import annotations

import pytest

from gateway.bus.memory import MemoryTransport, MemoryUnit
from gateway.bus.scan import Found, Scanner, ScanSettings, devices_block
from gateway.cli.scan import parse_units
from gateway.devices import sunspec
from gateway.devices.profile import Table, load_profile
from gateway.errors import TransportClosed

PROFILES = {m: load_profile(m) for m in ("EASTRON-SDM630", "EVSE-HEC", "SUNSPEC-METER", "SIO-1")}


def sdm630() -> MemoryUnit:
    unit = MemoryUnit()
    unit.set(Table.HOLDING, 0xFC02, [0x0070])
    return unit


def sunspec_meter() -> MemoryUnit:
    unit = MemoryUnit()
    starts = sunspec.layout([1, 203])
    unit.set(Table.HOLDING, 40000, list(sunspec.MARKER))
    for model, start in starts.items():
        unit.set(Table.HOLDING, start, [model, sunspec.MODEL_LENGTHS[model]])
    unit.set(Table.HOLDING, sunspec.end_address([1, 203]), [0xFFFF, 0])
    unit.set(Table.HOLDING, starts[1] + 2, [0x4143, 0x4D45])  # "ACME"
    return unit


async def scan(
    units: dict[int, MemoryUnit], ids: range, budget_s: float = 2.0
) -> tuple[list[Found], MemoryTransport]:
    async with MemoryTransport("line", units) as bus:
        settings = ScanSettings(tuple(ids), probe_timeout_s=0.05, budget_s=budget_s)
        return await Scanner(bus, PROFILES, settings).scan(), bus


async def test_only_answering_units_are_found_and_each_is_identified() -> None:
    hec = MemoryUnit()
    hec.set(Table.INPUT, 4, [0x0100])
    hec.refuse(Table.HOLDING, 0, 256)  # answers exception 02 to the probe: still a device
    found, bus = await scan(
        {1: sdm630(), 2: hec, 3: sunspec_meter(), 4: MemoryUnit(dead=True)}, range(1, 6)
    )
    assert {f.unit_id: f.profiles for f in found} == {
        1: ["EASTRON-SDM630"],
        2: ["EVSE-HEC"],
        3: ["SUNSPEC-METER"],
    }
    assert found[1].answered == "exception 02"
    assert found[2].sunspec == {"mn": "ACME", "md": "", "sn": ""}
    assert found[2].sunspec_models == [1, 203]
    assert {t.function for t in bus.log} <= {1, 2, 3, 4, 0x2B}, "the scan never writes"


async def test_a_shared_version_register_is_not_taken_for_another_model() -> None:
    """Our locker board reads 0x0100 at input 0 like the SIO-1; its map ends at input 7."""
    locker = MemoryUnit()
    locker.set(Table.INPUT, 0, [0x0100])
    locker.refuse(Table.INPUT, 8, 0xFFFF)
    sio = MemoryUnit()
    sio.set(Table.INPUT, 0, [0x0100])
    found, _ = await scan({1: locker, 2: sio}, range(1, 3))
    assert [f.profiles for f in found] == [[], ["SIO-1"]]


async def test_a_unit_answering_slowly_is_cut_off_at_its_budget() -> None:
    slow = sdm630()
    slow.think_s = 0.03
    found, _ = await scan({7: slow}, range(7, 8), budget_s=0.05)
    assert found[0].incomplete


def test_a_devices_block_for_each_recognised_unit() -> None:
    block = devices_block(
        [Found(3, "registers", profiles=["EASTRON-SDM630"]), Found(4, "registers")],
        "carport",
        {"EASTRON-SDM630": "meter"},
    )
    assert (
        '[[devices]]\nname = "meter-3"\nprofile = "EASTRON-SDM630"\nbus = "carport"\nunit_id = 3'
        in block
    )
    assert "unit_id = 4" not in block


def test_unit_ranges() -> None:
    assert parse_units("1-3,7,2") == (1, 2, 3, 7)
    with pytest.raises(ValueError, match="'300'"):
        parse_units("300")
    with pytest.raises(ValueError, match="'a-b'"):
        parse_units("a-b")


async def test_garbled_answers_are_reported_as_a_line_setting_to_check() -> None:
    garbled = MemoryUnit(corrupt_next=100)
    found, _ = await scan({3: garbled}, range(3, 4))
    assert found[0].answered.startswith("garbled frames")
    assert "baud rate" in found[0].answered


async def test_a_bus_that_cannot_be_reached_ends_the_scan_with_its_error() -> None:
    bus = MemoryTransport("line", {1: sdm630()})  # never opened: as a refused connection
    with pytest.raises(TransportClosed):
        await Scanner(bus, PROFILES, ScanSettings((1, 2), 0.05, 1.0)).scan()

"""The in-memory transport speaks real Modbus PDUs and fails in the ways it is told to."""

from __future__ import annotations

import asyncio

import pytest

from gateway.bus.memory import MemoryTransport, MemoryUnit
from gateway.bus.pdu import ExceptionAnswer, Read, Request, Write, decode_response, encode_request
from gateway.devices.profile import Table
from gateway.errors import BusTimeout, FrameError, TransportClosed
from tests.gateway.bus.memory_bus import PANEL


async def ask(
    transport: MemoryTransport, unit_id: int, request: Request
) -> list[int] | ExceptionAnswer:
    answer = await transport.transact(unit_id, encode_request(request), response_timeout=0.5)
    return decode_response(request, answer)


async def test_reads_and_writes_of_every_table_round_trip_through_the_pdus() -> None:
    unit = MemoryUnit()
    unit.set(Table.INPUT, 0, [7, 0xFFFF, 3])
    unit.set(Table.DISCRETE, 0, [1, 0, 1, 1, 0, 0, 0, 0, 1])
    async with MemoryTransport(units={1: unit}) as bus:
        assert await ask(bus, 1, Read(Table.INPUT, 0, 4)) == [7, 0xFFFF, 3, 0]
        assert await ask(bus, 1, Read(Table.DISCRETE, 0, 9)) == [1, 0, 1, 1, 0, 0, 0, 0, 1]
        assert await ask(bus, 1, Write(Table.HOLDING, 10, (500,))) == []
        assert await ask(bus, 1, Write(Table.HOLDING, 11, (1, 2, 3))) == []
        assert await ask(bus, 1, Write(Table.COIL, 2, (1,))) == []
        assert await ask(bus, 1, Write(Table.COIL, 4, (1, 0, 1))) == []
        assert await ask(bus, 1, Read(Table.HOLDING, 10, 4)) == [500, 1, 2, 3]
        assert await ask(bus, 1, Read(Table.COIL, 0, 7)) == [0, 0, 1, 0, 1, 0, 1]
    assert [(t.function, t.address, t.count) for t in bus.log] == [
        (4, 0, 4),
        (2, 0, 9),
        (6, 10, 1),
        (16, 11, 3),
        (5, 2, 1),
        (15, 4, 3),
        (3, 10, 4),
        (1, 0, 7),
    ]
    assert {t.outcome for t in bus.log} == {"answered"}


async def test_a_point_put_as_an_engineering_value_reads_back_as_its_registers() -> None:
    unit = MemoryUnit()
    unit.put(PANEL.point("temperature"), -12.5)  # i16, scale 0.1
    unit.put(PANEL.point("energy"), 70_000)  # u32, high word first
    assert unit.get(Table.INPUT, 1, 3) == [0x10000 - 125, 1, 70_000 - 0x10000]


async def test_a_refused_range_answers_exception_02_and_changes_nothing() -> None:
    unit = MemoryUnit()
    unit.refuse(Table.HOLDING, 4, 6)
    async with MemoryTransport(units={3: unit}) as bus:
        assert await ask(bus, 3, Read(Table.HOLDING, 0, 5)) == ExceptionAnswer(3, 2)
        assert await ask(bus, 3, Write(Table.HOLDING, 6, (9,))) == ExceptionAnswer(6, 2)
        assert await ask(bus, 3, Read(Table.HOLDING, 0, 4)) == [0, 0, 0, 0]
        assert await ask(bus, 3, Read(Table.HOLDING, 7, 1)) == [0]
    assert [t.outcome for t in bus.log] == ["exception", "exception", "answered", "answered"]


async def test_a_dead_or_missing_unit_times_out_after_the_timeout_it_was_given() -> None:
    clock = asyncio.get_running_loop().time
    async with MemoryTransport(units={1: MemoryUnit(dead=True)}) as bus:
        for unit_id in (1, 2):  # 2: nobody at that address
            start = clock()
            with pytest.raises(BusTimeout, match=f"unit {unit_id}"):
                await bus.transact(unit_id, encode_request(Read(Table.INPUT, 0, 1)), 0.02)
            assert clock() - start >= 0.02
    assert [(t.outcome, t.busy_s) for t in bus.log] == [("timeout", 0.02), ("timeout", 0.02)]


async def test_a_fake_sleep_makes_a_timeout_cost_nothing_but_it_is_still_counted() -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    async with MemoryTransport(units={1: MemoryUnit(dead=True)}, sleep=fake_sleep) as bus:
        with pytest.raises(BusTimeout):
            await bus.transact(1, encode_request(Read(Table.INPUT, 0, 1)), 30.0)
    assert slept == [30.0]
    assert bus.log[0].busy_s == 30.0


async def test_a_unit_slower_than_the_timeout_times_out_and_a_slow_one_answers() -> None:
    unit = MemoryUnit(think_s=0.01)
    async with MemoryTransport(units={1: unit}) as bus:
        assert await ask(bus, 1, Read(Table.INPUT, 0, 1)) == [0]
        with pytest.raises(BusTimeout):
            await bus.transact(1, encode_request(Read(Table.INPUT, 0, 1)), 0.005)
    assert [(t.outcome, t.busy_s) for t in bus.log] == [("answered", 0.01), ("timeout", 0.005)]


async def test_corrupt_responses_raise_frame_errors_as_many_times_as_told() -> None:
    unit = MemoryUnit(corrupt_next=2)
    async with MemoryTransport(units={1: unit}) as bus:
        for _ in range(2):
            with pytest.raises(FrameError):
                await ask(bus, 1, Read(Table.INPUT, 0, 1))
        assert await ask(bus, 1, Read(Table.INPUT, 0, 1)) == [0]
    assert [t.outcome for t in bus.log] == ["corrupt", "corrupt", "answered"]


async def test_a_function_the_bus_does_not_serve_answers_exception_01() -> None:
    read_device_identification = bytes([0x2B, 0x0E, 0x01, 0x00])
    async with MemoryTransport(units={1: MemoryUnit()}) as bus:
        assert await bus.transact(1, read_device_identification, 0.5) == bytes([0xAB, 0x01])
    assert [(t.function, t.outcome) for t in bus.log] == [(0x2B, "exception")]


async def test_a_bus_that_is_not_open_refuses_transactions() -> None:
    bus = MemoryTransport(units={1: MemoryUnit()})
    with pytest.raises(TransportClosed):
        await ask(bus, 1, Read(Table.INPUT, 0, 1))
    async with bus:
        await ask(bus, 1, Read(Table.INPUT, 0, 1))
    with pytest.raises(TransportClosed):
        await ask(bus, 1, Read(Table.INPUT, 0, 1))


async def test_overlapping_transactions_are_counted_not_prevented() -> None:
    async with MemoryTransport(units={1: MemoryUnit(think_s=0.005)}) as bus:
        await asyncio.gather(*(ask(bus, 1, Read(Table.INPUT, 0, 1)) for _ in range(3)))
    assert bus.max_in_flight == 3
    assert bus.in_flight == 0

"""SunSpec discovery walks whatever chain a device has; placement follows it."""

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.devices.profile import load_profile
from gateway.devices.sunspec import (
    END_MODEL_ID,
    MARKER,
    MODEL_LENGTHS,
    discover,
    end_address,
    layout,
    place,
)
from gateway.errors import BusTimeout, ModbusExceptionResponse, SunSpecError

Reader = Callable[[int, int], Awaitable[list[int]]]


def device(models: list[int], base: int = 40000, *, end_length: bool = True) -> dict[int, int]:
    """Holding registers of a SunSpec device: marker, [ID, L, zeros…] per model, end model."""
    regs = {base: MARKER[0], base + 1: MARKER[1]}
    for model, start in layout(models, base).items():
        regs[start] = model
        regs[start + 1] = MODEL_LENGTHS[model]
        for a in range(start + 2, start + 2 + MODEL_LENGTHS[model]):
            regs[a] = 0
    end = end_address(models, base)
    regs[end] = END_MODEL_ID
    if end_length:
        regs[end + 1] = 0
    return regs


def reader(regs: dict[int, int]) -> Reader:
    """Reads like a real device: an address it does not hold answers exception 02."""

    async def read(address: int, count: int) -> list[int]:
        if any(a not in regs for a in range(address, address + count)):
            raise ModbusExceptionResponse("test", 1, 0x03, 2)
        return [regs[a] for a in range(address, address + count)]

    return read


async def test_standard_chain_is_found_at_40000() -> None:
    models = [1, 103, 120, 121, 122, 123, 124]
    starts = await discover(reader(device(models)))
    assert starts == layout(models)
    assert starts[103] == 40070
    assert starts[123] == 40228


async def test_placement_follows_a_shuffled_chain_at_another_base() -> None:
    models = [1, 120, 103, 124, 123, 121, 122]  # 124 is not used by the profile
    starts = await discover(reader(device(models, base=0)))
    assert starts == {1: 2, 120: 70, 103: 98, 124: 150, 123: 176, 121: 202, 122: 234}
    profile = place(load_profile("SUNSPEC-INV"), starts)
    assert profile.point("w").address == 98 + 14
    assert profile.point("wmaxlimpct").address == 176 + 5
    assert profile.point("wmax").address == 202 + 2


def test_placed_profile_is_absolute_and_still_valid() -> None:
    profile = load_profile("SUNSPEC-METER")
    placed = place(profile, layout([1, 203]))
    assert placed.sunspec is None
    assert all(p.address is not None for p in placed.points)
    assert all(p.sunspec_model is None and p.offset is None for p in placed.points)
    assert type(placed).model_validate(placed.model_dump()) == placed
    assert profile.point("w").address is None  # the loaded profile is untouched


def test_placing_without_a_needed_model_names_profile_and_model() -> None:
    with pytest.raises(SunSpecError, match=r"SUNSPEC-INV.*no SunSpec model 120"):
        place(load_profile("SUNSPEC-INV"), layout([1, 103]))


def test_placing_past_the_last_address_is_an_error() -> None:
    with pytest.raises(SunSpecError, match="cannot place model 203"):
        place(load_profile("SUNSPEC-METER"), {1: 40000, 203: 0xFFFF - 20})


async def test_base_answering_exception_02_is_skipped() -> None:
    regs = device([1, 203], base=0)
    starts = await discover(reader(regs), bases=(40000, 0, 50000))
    assert starts == {1: 2, 203: 70}


async def test_base_holding_other_registers_is_skipped() -> None:
    regs = device([1, 203], base=50000) | {40000: 0x1234, 40001: 0x5678}
    assert await discover(reader(regs)) == layout([1, 203], 50000)


async def test_missing_marker_names_every_base_probed() -> None:
    regs = {0: 0, 1: 0}
    with pytest.raises(SunSpecError) as info:
        await discover(reader(regs))
    message = str(info.value)
    assert "40000: exception 02" in message
    assert "0: 0x0000 0x0000" in message
    assert "50000: exception 02" in message


async def test_end_model_without_length_still_ends_the_walk() -> None:
    regs = device([1, 103], end_length=False)
    assert await discover(reader(regs)) == layout([1, 103])


async def test_exception_where_the_next_model_should_be_ends_the_walk() -> None:
    regs = device([1, 203])
    del regs[end_address([1, 203])], regs[end_address([1, 203]) + 1]
    assert await discover(reader(regs)) == layout([1, 203])


async def test_timeout_during_the_walk_is_not_mistaken_for_the_end() -> None:
    regs = device([1, 103])

    async def read(address: int, count: int) -> list[int]:
        if address == 40070:
            raise BusTimeout("test", 1, "no response")
        return await reader(regs)(address, count)

    with pytest.raises(BusTimeout):
        await discover(read)


async def test_chain_without_end_model_does_not_loop_forever() -> None:
    async def read(address: int, count: int) -> list[int]:
        return list(MARKER) if address == 40000 and count == 2 else [0] * count

    with pytest.raises(SunSpecError, match="no end model within 64 models"):
        await discover(read)


async def test_length_running_past_65535_is_rejected() -> None:
    regs = {40000: MARKER[0], 40001: MARKER[1], 40002: 1, 40003: 0xFFF0}
    with pytest.raises(SunSpecError, match="runs past address 65535"):
        await discover(reader(regs))


@given(
    models=st.lists(st.sampled_from(sorted(MODEL_LENGTHS)), unique=True),
    base=st.sampled_from([0, 40000, 50000]),
)
def test_discovery_finds_any_chain_the_simulator_lays_out(models: list[int], base: int) -> None:
    starts = asyncio.run(discover(reader(device(models, base))))
    assert starts == layout(models, base)

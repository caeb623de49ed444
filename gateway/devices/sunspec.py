"""SunSpec: find the model chain behind the 'SunS' marker and place a profile's points.

SunSpec devices do not share absolute addresses: each holds a chain of models ([ID, L,
L registers of data]) after a two-register marker at 40000, 0 or 50000, ending with model
0xFFFF (docs/devices.md, "SunSpec addressing"). A profile names points by model and offset;
:func:`discover` walks the chain of a real device and :func:`place` turns offsets into
addresses. The simulators lay
their models out with :func:`layout`, so a test can shuffle the chain and prove nothing is
hard-coded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from pydantic import ValidationError

from gateway.devices.profile import Point, Profile
from gateway.errors import ModbusExceptionResponse, SunSpecError
from gateway.validation import format_validation_error

#: Length L (data registers after ID and L) of the models our profiles and simulators use.
MODEL_LENGTHS: dict[int, int] = {
    1: 66,
    103: 50,
    120: 26,
    121: 30,
    122: 44,
    123: 24,
    124: 24,
    203: 105,
}
MARKER = (0x5375, 0x6E53)  # "SunS"
END_MODEL_ID = 0xFFFF
DEFAULT_BASES = (40000, 0, 50000)  # pysunspec2's probe order
MAX_MODELS = 64  # a longer chain is garbage, not a device

#: ``read(address, count)``: holding registers of one device, raising the gateway's BusErrors.
Reader = Callable[[int, int], Awaitable[list[int]]]


def layout(models: Sequence[int], base: int = 40000) -> dict[int, int]:
    """Model id → address of its ID register, models in order right after the marker at ``base``.

    This is how the simulators build their registers; lengths come from :data:`MODEL_LENGTHS`.
    """
    starts: dict[int, int] = {}
    address = base + len(MARKER)
    for model in models:
        starts[model] = address
        address += 2 + MODEL_LENGTHS[model]
    return starts


def end_address(models: Sequence[int], base: int = 40000) -> int:
    """Address of the end model's ID register (0xFFFF) after :func:`layout`'s models."""
    return base + len(MARKER) + sum(2 + MODEL_LENGTHS[m] for m in models)


def place(profile: Profile, starts: Mapping[int, int]) -> Profile:
    """A copy of the profile whose points carry absolute addresses (start + offset).

    ``starts`` maps model id → address of its ID register, as :func:`discover` returns it.
    Raises :class:`SunSpecError` naming the profile and the model if the device lacks a model
    the profile uses, or if a point would not fit below address 65535.
    """
    points = [_placed(profile, p, starts) for p in profile.points]
    return profile.model_copy(update={"points": points, "sunspec": None})


def _placed(profile: Profile, point: Point, starts: Mapping[int, int]) -> Point:
    """One point with its absolute address, re-validated (model_copy does not validate)."""
    if point.sunspec_model is None or point.offset is None:
        return point
    if point.sunspec_model not in starts:
        found = ", ".join(map(str, sorted(starts))) or "none"
        raise SunSpecError(
            f"profile {profile.model}: the device has no SunSpec model {point.sunspec_model} "
            f"(needed by point {point.name!r}; models found: {found})"
        )
    data = point.model_dump(exclude={"sunspec_model", "offset"})
    data["address"] = starts[point.sunspec_model] + point.offset
    try:
        return Point.model_validate(data)
    except ValidationError as exc:
        raise SunSpecError(
            f"profile {profile.model}: cannot place model {point.sunspec_model} at "
            f"{starts[point.sunspec_model]}: {format_validation_error(exc)}"
        ) from None


async def discover(read: Reader, bases: Sequence[int] = DEFAULT_BASES) -> dict[int, int]:
    """Walk the model chain of a device; model id → address of its ID register.

    Each base is probed for the 'SunS' marker; a base answering a Modbus exception or other
    registers is skipped. The first base with the marker is walked; if none has it,
    :class:`SunSpecError` lists what every base returned. Timeouts and frame errors are not
    caught: the caller retries discovery as a whole.
    """
    seen: list[str] = []
    for base in bases:
        try:
            marker = await read(base, len(MARKER))
        except ModbusExceptionResponse as exc:
            seen.append(f"{base}: exception {exc.exception_code:02d}")
            continue
        if tuple(marker) == MARKER:
            return await _walk(read, base + len(MARKER))
        seen.append(f"{base}: {' '.join(f'{r:#06x}' for r in marker) or 'nothing'}")
    raise SunSpecError(f"no SunSpec marker 'SunS' found (probed {'; '.join(seen)})")


async def _walk(read: Reader, address: int) -> dict[int, int]:
    """Follow [ID, L] headers from ``address`` to the end model.

    ID and L are read separately: some devices do not supply the end model's L (pysunspec2,
    docs/devices.md, "SunSpec addressing"), so the walk stops on ID 0xFFFF alone. A device
    that answers an exception where the next header should be has no more models either. A
    chain that runs past 65535 or holds more than :data:`MAX_MODELS` models is garbage and
    raises :class:`SunSpecError`.
    """
    starts: dict[int, int] = {}
    for _ in range(MAX_MODELS):
        try:
            [model_id] = await read(address, 1)
            if model_id == END_MODEL_ID:
                return starts
            [length] = await read(address + 1, 1)
        except ModbusExceptionResponse:
            return starts
        if address + 2 + length > 0xFFFF:
            raise SunSpecError(
                f"SunSpec model {model_id} at {address} has length {length}, "
                "which runs past address 65535"
            )
        starts.setdefault(model_id, address)
        address += 2 + length
    raise SunSpecError(f"SunSpec chain has no end model within {MAX_MODELS} models")

"""SunSpec: find the model chain behind the 'SunS' marker and place a profile's points.

SunSpec devices do not share absolute addresses: each holds a chain of models ([ID, L,
L registers of data]) after a two-register marker at 40000, 0 or 50000, ending with model
0xFFFF. A profile names points by model and offset; :func:`discover` walks the chain of a
real device and :func:`place` turns offsets into addresses. The simulators lay their models
out with :func:`layout`, so a test can shuffle the chain and prove nothing is hard-coded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from gateway.errors import ModbusExceptionResponse, ProfileError
from gateway.profile import Profile

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
DEFAULT_BASES = (40000, 0, 50000)
MAX_MODELS = 64

Reader = Callable[[int, int], Awaitable[list[int]]]


class SunSpecError(ProfileError):
    """No SunSpec model chain where one was expected, or a broken chain."""


def layout(models: Sequence[int], base: int = 40000) -> dict[int, int]:
    """Model id → address of its ID register, models in order after the marker at ``base``."""
    starts: dict[int, int] = {}
    address = base + 2
    for model in models:
        starts[model] = address
        address += 2 + MODEL_LENGTHS[model]
    return starts


def end_address(models: Sequence[int], base: int = 40000) -> int:
    """Address of the end model's ID register."""
    return base + 2 + sum(2 + MODEL_LENGTHS[m] for m in models)


def place(profile: Profile, starts: Mapping[int, int]) -> Profile:
    """A copy of the profile whose points carry absolute addresses."""
    points = []
    for p in profile.points:
        if p.sunspec_model is None or p.offset is None:
            points.append(p)
            continue
        if p.sunspec_model not in starts:
            found = ", ".join(map(str, sorted(starts))) or "none"
            raise SunSpecError(
                f"profile {profile.model}: the device has no SunSpec model {p.sunspec_model} "
                f"(needed by point {p.name!r}; models found: {found})"
            )
        address = starts[p.sunspec_model] + p.offset
        points.append(
            p.model_copy(update={"address": address, "sunspec_model": None, "offset": None})
        )
    return profile.model_copy(update={"points": points, "sunspec": None})


async def discover(read: Reader, bases: Sequence[int] = DEFAULT_BASES) -> dict[int, int]:
    """Walk the model chain of a device; model id → address of its ID register."""
    seen: list[str] = []
    for base in bases:
        try:
            marker = await read(base, 2)
        except ModbusExceptionResponse as exc:
            seen.append(f"{base}: exception {exc.exception_code:02d}")
            continue
        if tuple(marker) == MARKER:
            return await _walk(read, base + 2)
        seen.append(f"{base}: {' '.join(f'{r:04x}' for r in marker)}")
    raise SunSpecError(f"no SunSpec marker 'SunS' found (probed {'; '.join(seen)})")


async def _walk(read: Reader, address: int) -> dict[int, int]:
    starts: dict[int, int] = {}
    for _ in range(MAX_MODELS):
        [model_id] = await read(address, 1)
        if model_id == END_MODEL_ID:
            return starts
        [length] = await read(address + 1, 1)
        if address + 2 + length > 0xFFFF:
            raise SunSpecError(f"model {model_id} at {address} has length {length} past 65535")
        starts.setdefault(model_id, address)
        address += 2 + length
    raise SunSpecError(f"no end model after {MAX_MODELS} models; chain is broken")

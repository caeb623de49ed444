"""Faults a test can inject per simulated unit, as field problems show up on real buses.

Exception 02 for an unreadable range is not here: append a ``Range`` to the unit's
``regs.unreadable`` instead, which is where a real device's map would say it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class UnitFaults:
    dead: bool = False  # the unit never answers (powered off, cut cable, wrong address)
    think_time_s: float = 0.0  # a slow unit: extra time between request and response
    chunk_size: int | None = None  # deliver the response in pieces of this many bytes …
    chunk_gap_s: float = 0.0  # … with this much silence between them (USB adapters)
    corrupt_crc: int = 0  # corrupt the CRC of the next N responses
    #: corrupt the CRC of every response (a noisy line), unlike the counted ``corrupt_crc``
    corrupt_always: bool = False


class Faults:
    """Faults by unit id; a unit without an entry behaves."""

    def __init__(self) -> None:
        self._by_unit: dict[int, UnitFaults] = {}

    def of(self, unit_id: int) -> UnitFaults:
        return self._by_unit.setdefault(unit_id, UnitFaults())

    def clear(self, unit_id: int | None = None) -> None:
        if unit_id is None:
            self._by_unit.clear()
        else:
            self._by_unit.pop(unit_id, None)

    def take_crc_corruption(self, unit_id: int) -> bool:
        """Whether the next response of the unit gets a bad CRC (consumes one if counted)."""
        f = self._by_unit.get(unit_id)
        if f is None:
            return False
        if f.corrupt_always:
            return True
        if f.corrupt_crc > 0:
            f.corrupt_crc -= 1
            return True
        return False

"""A 16-door parcel-locker board (map LCK-16, docs/devices.md#lck-16).

Each door has a hook (the lock), a leaf (open or shut) and an item sensor. An unlock coil
pulses the hook for ``unlock_pulse``; the coil clears itself and the leaf springs open; the
hook latches again when the leaf is pushed shut. A hook opened without a command is tamper
(``forced_open``), cleared by the next unlock command of that door. ``unlock_all`` works only
within 5 s of the two-step arm. Parcel locks are fail-secure: when the gateway watchdog
expires the board refuses unlocks (exception 04), drops the pulses an ``unlock_all`` still
had queued, and never opens anything by itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.devices.profile import Table, load_profile
from hil_tests.rig.registers import ExceptionCode, RegisterMap, SimModbusError, SimulatedUnit

DOORS = 16
ARM_MAGIC = 0x5AA5
ARM_WINDOW_S = 5.0
UNLOCK_ALL_COIL = 100


@dataclass
class Door:
    hook_locked: bool = True
    leaf_open: bool = False
    item: bool = False
    forced: bool = False
    open_since: float | None = None
    pulse_until: float | None = None


class LockerBoard(SimulatedUnit):
    def __init__(self, unit_id: int) -> None:
        profile = load_profile("LCK-16")
        super().__init__(
            profile, RegisterMap.from_points(profile.points, profile.unreadable), unit_id
        )
        self.doors = [Door() for _ in range(DOORS)]
        self.driver_fault: set[int] = set()
        self.supply_low = False
        self.last_result = 0
        self._now: float | None = None
        self._armed_at: float | None = None
        self._last_heartbeat = 0.0
        self._beat = 0.0
        self._queue: list[tuple[float, int]] = []  # unlock_all: (when, door)
        self.regs.put(Table.HOLDING, 0, [unit_id, 50, 120, 0])
        self.set("map_version", 0x0100)
        self._publish()

    # -- people and faults ------------------------------------------------------------------

    def close_door(self, n: int) -> None:
        door = self.doors[n - 1]
        door.leaf_open, door.hook_locked, door.open_since = False, True, None

    def deposit(self, n: int) -> None:
        self._need_open(n).item = True

    def pickup(self, n: int) -> None:
        self._need_open(n).item = False

    def force_open(self, n: int) -> None:
        door = self.doors[n - 1]
        door.hook_locked, door.leaf_open, door.forced = False, True, True
        door.open_since = self.now

    def lock_driver_fault(self, n: int, active: bool = True) -> None:
        (self.driver_fault.add if active else self.driver_fault.discard)(n)

    def _need_open(self, n: int) -> Door:
        door = self.doors[n - 1]
        if not door.leaf_open:
            raise ValueError(f"door {n} is shut")
        return door

    # -- physics ----------------------------------------------------------------------------

    @property
    def now(self) -> float:
        """The time of the last :meth:`advance` (0 before the first)."""
        return 0.0 if self._now is None else self._now

    @property
    def watchdog_expired(self) -> bool:
        timeout = self.regs.get(Table.HOLDING, 3, 1)[0]
        return bool(timeout) and self.now - self._last_heartbeat > timeout

    def advance(self, now: float) -> None:
        if self._now is None:
            self._now = self._last_heartbeat = now
        self._beat += max(0.0, now - self._now)
        self._now = now
        if self.watchdog_expired:
            self._queue.clear()  # fail-secure: no unlock goes out without a live gateway
        for door in self.doors:
            if door.pulse_until is not None and now >= door.pulse_until:
                door.pulse_until = None
        for when, n in list(self._queue):
            if now >= when:
                self._queue.remove((when, n))
                self._pulse(n)
        if self._armed_at is not None and now - self._armed_at > ARM_WINDOW_S:
            self._armed_at = None
            self.regs.put(Table.HOLDING, 20, [0])
        self._publish()

    def _pulse(self, n: int) -> None:
        door = self.doors[n - 1]
        if n in self.driver_fault:
            self.last_result = (n << 8) | 1
            return
        pulse_s = self.regs.get(Table.HOLDING, 1, 1)[0] / 100
        door.pulse_until = self.now + pulse_s
        door.hook_locked, door.leaf_open, door.forced = False, True, False
        door.open_since = self.now
        self.last_result = n << 8

    def _publish(self) -> None:
        alarm_s = self.regs.get(Table.HOLDING, 2, 1)[0]
        bitmaps = {"locked": 0, "item": 0, "too_long": 0, "forced": 0}
        for i, d in enumerate(self.doors):
            bit = 1 << i
            bitmaps["locked"] |= bit if d.hook_locked else 0
            bitmaps["item"] |= bit if d.item else 0
            bitmaps["forced"] |= bit if d.forced else 0
            too_long = d.open_since is not None and self.now - d.open_since > alarm_s
            bitmaps["too_long"] |= bit if too_long else 0
            self.regs.put(Table.DISCRETE, i, [int(d.hook_locked)])
            self.regs.put(Table.DISCRETE, 100 + i, [int(d.item)])
            self.regs.put(Table.COIL, i, [int(d.pulse_until is not None)])
        status = (int(bool(self.driver_fault))) | (int(self.supply_low) << 1)
        self.regs.put(Table.INPUT, 1, [int(self._beat) & 0xFFFF])
        self.regs.put(
            Table.INPUT,
            2,
            [
                bitmaps["locked"],
                bitmaps["item"],
                bitmaps["too_long"],
                bitmaps["forced"],
                status,
                self.last_result,
            ],
        )

    # -- writes -----------------------------------------------------------------------------

    def on_write(self, table: Table, address: int, values: Sequence[int]) -> None:
        if table is Table.COIL:
            self._coils(address, values)
        else:
            self._holding(address, values)
        self._publish()

    def _coils(self, address: int, values: Sequence[int]) -> None:
        if self.watchdog_expired:
            raise SimModbusError(ExceptionCode.DEVICE_FAILURE, "gateway watchdog expired")
        for offset, value in enumerate(values):
            coil = address + offset
            if not value:
                continue
            if coil == UNLOCK_ALL_COIL:
                if self._armed_at is None:
                    raise SimModbusError(ExceptionCode.DEVICE_FAILURE, "unlock_all not armed")
                self._armed_at = None
                self.regs.put(Table.HOLDING, 20, [0])
                pulse_s = max(0.1, self.regs.get(Table.HOLDING, 1, 1)[0] / 100)
                self._queue += [
                    (self.now + i * pulse_s, n) for i, n in enumerate(range(1, DOORS + 1))
                ]
            elif coil < DOORS:
                self._pulse(coil + 1)

    def _holding(self, address: int, values: Sequence[int]) -> None:
        for offset, value in enumerate(values):
            reg = address + offset
            if reg == 20:
                if value != ARM_MAGIC:
                    raise SimModbusError(ExceptionCode.ILLEGAL_DATA_VALUE, f"arm {value:#x}")
                self._armed_at = self.now
            elif reg == 1 and value > 6000:
                raise SimModbusError(ExceptionCode.ILLEGAL_DATA_VALUE, f"pulse {value}")
            elif reg == 4:
                self._last_heartbeat = self.now
        self.regs.put(Table.HOLDING, address, values)

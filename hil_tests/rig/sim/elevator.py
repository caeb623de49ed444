"""A retrofitted elevator behind its GB/T 24476 monitoring box (map ELV-24476).

The car travels between floors at rated speed, cycles its doors at each stop, carries
passengers, answers calls, and obeys the service modes of docs/devices.md#elv-24476: an
out-of-service request parks it (only from normal service), a fire-recall request — which
mirrors the fire panel, so it overrides a parked car too — or the hard-wired fire panel
input, which stays authoritative, sends it non-stop to the recall floor and reports "parked"
with the doors open. The gateway watchdog drops both remote requests when the heartbeat
stops; the elevator never strands people because the gateway died. Faults of table 1.3 are
raised on demand; those that open the safety chain stop the car where it is until they are
cleared (I7 in docs/interlocks.md). A trapped-passenger scenario stops the car with its
doors closed and people inside, and leaves detecting it to the gateway.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence

from gateway.devices.profile import Table, load_profile
from hil_tests.rig.registers import ExceptionCode, RegisterMap, SimModbusError, SimulatedUnit

FLOOR_HEIGHT_M = 3.0
DOOR_MOVE_S = 2.0
DOOR_DWELL_S = 3.0
PERSON_KG = 80
RATED_KG = 630
#: table 1.3: code → bit of Fault_Bitmap
FAULT_BITS = {
    1: 0,
    2: 1,
    3: 2,
    4: 3,
    5: 4,
    6: 5,
    7: 6,
    8: 7,
    90: 8,
    91: 9,
    92: 10,
    93: 11,
    94: 12,
    95: 13,
    96: 14,
}
#: most severe first: what Message_Code reports when several are active
SEVERITY = (1, 5, 94, 95, 92, 91, 2, 3, 4, 6, 7, 8, 93, 96, 90)
#: faults after which the elevator's own safety chain holds the car: safety circuit open,
#: unintended movement, run-time limiter, prevent-rerun, over-travel, overspeed, door open
#: while running
SAFETY_STOP = frozenset({1, 5, 6, 8, 91, 92, 94, 95})
NORMAL, STOP_SERVICE, INSPECTION, FIRE_RETURN = 1, 0, 2, 3
CLOSED, OPENING, OPEN, CLOSING = 2, 3, 4, 1


class Elevator(SimulatedUnit):
    def __init__(
        self,
        unit_id: int,
        *,
        floors: tuple[int, int] = (1, 6),
        speed_mps: float = 1.0,
        recall_floor: int | None = None,
        traffic: bool = False,
        rng: random.Random | None = None,
        wall_clock_offset: float = 1_700_000_000.0,
    ) -> None:
        profile = load_profile("ELV-24476")
        super().__init__(
            profile, RegisterMap.from_points(profile.points, profile.unreadable), unit_id
        )
        self.lowest, self.highest = floors
        self.speed = speed_mps
        self.recall_floor = self.lowest if recall_floor is None else recall_floor
        self.traffic = traffic
        self.rng = rng or random.Random(unit_id)
        self.wall_offset = wall_clock_offset
        self.position_m = 0.0
        self.velocity = 0.0
        self.calls: deque[int] = deque()
        self.door = CLOSED
        self.door_timer = 0.0
        self.passengers = 0
        self.mode = NORMAL
        self.faults: set[int] = set()
        self.trapped = False
        self.hardwired_recall = False
        self.power_lost = False
        self.trips = 0
        self.door_cycles = 0
        self.running_s = 0.0
        self._now: float | None = None
        self._last_heartbeat = 0.0
        self._cps_tick = 0.0
        self.regs.put(Table.HOLDING, 101, [30])
        self.set("map_version", 0x0100)
        self._publish()

    # -- scenarios and faults ---------------------------------------------------------------

    def call(self, floor: int) -> None:
        if not self.lowest <= floor <= self.highest:
            raise ValueError(f"floor {floor} outside {self.lowest}..{self.highest}")
        if floor not in self.calls:
            self.calls.append(floor)

    def board(self, n: int = 1) -> None:
        self.passengers += n

    def alight(self, n: int = 1) -> None:
        self.passengers = max(0, self.passengers - n)

    def raise_fault(self, code: int) -> None:
        if code not in FAULT_BITS:
            raise ValueError(f"fault code {code} is not in table 1.3")
        self.faults.add(code)

    def clear_fault(self, code: int) -> None:
        self.faults.discard(code)

    def trap_passengers(self, between_floors: bool = False, people: int = 1) -> None:
        """Stop the car with the doors closed and people inside until :meth:`release`."""
        self.passengers = max(self.passengers, people)
        if between_floors:
            self.position_m += FLOOR_HEIGHT_M / 2 if self.floor < self.highest else -1.5
        self.velocity = 0.0
        self.door = CLOSED
        self.trapped = True

    def release(self) -> None:
        self.trapped = False
        self.position_m = round(self.position_m / FLOOR_HEIGHT_M) * FLOOR_HEIGHT_M
        self._open_doors()

    def hardwired_fire_recall(self, active: bool) -> None:
        self.hardwired_recall = active

    def cut_power(self, lost: bool = True) -> None:
        self.power_lost = lost

    # -- physics ----------------------------------------------------------------------------

    @property
    def floor(self) -> int:
        return self.lowest + round(self.position_m / FLOOR_HEIGHT_M)

    @property
    def at_floor(self) -> bool:
        return abs(self.position_m - (self.floor - self.lowest) * FLOOR_HEIGHT_M) < 0.01

    def advance(self, now: float) -> None:
        if self._now is None:
            self._now = now
            self._last_heartbeat = now
        dt, self._now = max(0.0, now - self._now), now
        self._cps_tick += dt
        self._watchdog(now)
        self._service_mode()
        if not self.trapped:
            self._doors(dt)
            self._move(dt)
            if self.traffic:
                self._random_traffic()
        self._publish()

    def _watchdog(self, now: float) -> None:
        timeout = self.regs.get(Table.HOLDING, 101, 1)[0]
        remaining = max(0.0, timeout - (now - self._last_heartbeat)) if timeout else 0.0
        self.regs.put(Table.HOLDING, 105, [round(remaining)])
        if timeout and remaining <= 0:
            self.regs.put(Table.HOLDING, 102, [0, 0])  # drop both remote requests

    def _service_mode(self) -> None:
        remote_recall = self.regs.get(Table.HOLDING, 103, 1)[0] == 1
        out_of_service = self.regs.get(Table.HOLDING, 102, 1)[0] == 1
        if self.hardwired_recall or (remote_recall and self.mode != INSPECTION):
            if self.mode != FIRE_RETURN:
                self.mode = FIRE_RETURN
                self.calls.clear()
            if not self._at_recall_floor():
                self.calls = deque([self.recall_floor])
            elif self.door == CLOSED and self.velocity == 0.0 and not self.trapped:
                self._open_doors()  # already there: park with the doors open
            return
        if self.mode == FIRE_RETURN:
            self.mode = NORMAL
        if out_of_service and self.mode == NORMAL and not self.calls and self.velocity == 0:
            self.mode = STOP_SERVICE
            if self.door != CLOSED:
                self.door, self.door_timer = CLOSING, DOOR_MOVE_S
        elif not out_of_service and self.mode == STOP_SERVICE:
            self.mode = NORMAL

    def _doors(self, dt: float) -> None:
        if self.door in (OPENING, OPEN, CLOSING):
            self.door_timer -= dt
            if self.door_timer > 0:
                return
            if self.door == OPENING:
                self.door, self.door_timer = OPEN, DOOR_DWELL_S
            elif self.door == OPEN:
                if self.mode == FIRE_RETURN and self._at_recall_floor():
                    self.door_timer = DOOR_DWELL_S  # parked with doors open
                else:
                    self.door, self.door_timer = CLOSING, DOOR_MOVE_S
            else:
                self.door = CLOSED

    def _at_recall_floor(self) -> bool:
        return self.floor == self.recall_floor and self.at_floor

    def _open_doors(self) -> None:
        self.door, self.door_timer = OPENING, DOOR_MOVE_S
        self.door_cycles += 1

    def _move(self, dt: float) -> None:
        held = bool(self.faults & SAFETY_STOP)
        if held or self.mode == STOP_SERVICE or self.door != CLOSED or not self.calls:
            self.velocity = 0.0
            return
        target_m = (self.calls[0] - self.lowest) * FLOOR_HEIGHT_M
        delta = target_m - self.position_m
        if abs(delta) < 0.01:
            self.velocity = 0.0
            self.calls.popleft()
            self._open_doors()
            return
        if self.velocity == 0.0:
            self.trips += 1
        step = min(abs(delta), self.speed * dt)
        self.velocity = self.speed if delta > 0 else -self.speed
        self.position_m += step if delta > 0 else -step
        self.running_s += dt
        if abs(target_m - self.position_m) < 0.01:
            self.position_m = target_m

    def _random_traffic(self) -> None:
        if (
            self.mode == NORMAL
            and not self.calls
            and self.door == CLOSED
            and self.rng.random() < 0.05
        ):
            self.call(self.rng.randint(self.lowest, self.highest))
            if self.rng.random() < 0.5:
                self.passengers = self.rng.randint(0, 4)

    # -- registers --------------------------------------------------------------------------

    def _publish(self) -> None:
        moving = self.velocity != 0.0
        active = [c for c in SEVERITY if c in self.faults]
        bitmap = 0
        for code in self.faults:
            bitmap |= 1 << FAULT_BITS[code]
        load = self.passengers * PERSON_KG * 100 // RATED_KG
        feedback = 0
        if self.mode == FIRE_RETURN:
            parked = self._at_recall_floor() and self.door == OPEN
            feedback = 2 if parked else 1
        values: dict[str, int] = {
            "cps_heartbeat": int(self._cps_tick) & 0xFFFF,
            "service_mode": 5 if self.power_lost else self.mode,
            "car_status": int(moving),
            "car_direction": 0 if not moving else (1 if self.velocity > 0 else 2),
            "door_zone": int(not moving and self.at_floor),
            "car_position": self.floor,
            "door_close_status": int(self.door == CLOSED),
            "car_door_state": self.door,
            "hoistway_door_locked": int(self.door == CLOSED),
            "passenger_status": int(self.passengers > 0),
            "car_speed": round(self.velocity * 1000),
            "load_pct": min(150, load),
            "overload": int(load > 100),
            "message_code": active[0] if active else 0,
            "fault_bitmap": bitmap,
            "alarm_button": int(90 in self.faults),
            "main_power": int(self.power_lost),
            "fire_recall_feedback": feedback,
            "total_running_time": int(self.running_s // 3600),
            "trip_counter": self.trips,
            "door_open_count": self.door_cycles,
            "time_stamp": int(self.wall_offset + (self._now or 0.0)),
        }
        for name, value in values.items():
            self.set(name, value)

    def on_write(self, table: Table, address: int, values: Sequence[int]) -> None:
        for offset, value in enumerate(values):
            addr = address + offset
            if addr in (102, 103) and value not in (0, 1):
                raise SimModbusError(ExceptionCode.ILLEGAL_DATA_VALUE, f"{addr}={value}")
            if addr == 105:
                raise SimModbusError(ExceptionCode.ILLEGAL_DATA_ADDRESS, "105 is read-only")
        self.regs.put(table, address, values)
        if address <= 100 < address + len(values) and self._now is not None:
            self._last_heartbeat = self._now
            self._watchdog(self._now)  # remaining_watchdog reads full right after a beat

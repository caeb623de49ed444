"""An AC charger with a car (map EVSE-HEC: Heidelberg core + extensions, docs/devices.md#evse-hec).

IEC 61851 states follow a plug-and-car model: A (no car) → B (car connected) → C (car asks
for current and the box allows it). The advertised current is the setpoint (261), limited by
the hardware maximum and the car; the car follows a new current within about a second; 0 A
pauses (C → B) and the contactor opens — after 6 s if the car ignores the PWM switching off
(IEC 61851-1 Table A.6 seq 10.2), at once when the box enters F or ERR. The Modbus watchdog
(257, ms) counts down between *writes* (our convention; ``refresh_on_any_request`` gives
Heidelberg's any-traffic mode); on expiry the failsafe current (262) applies, and 0 there
means the error state. Remote lock 259 = 0 forces state F. The box heats with current and
derates at 60 °C, trips at 80 °C, and recovers below 55 °C; by default it is a box made to
carry its rated 32 A for ever (about 48 °C at 25 °C ambient), so it gets hot only when a test
makes it (a hotter ambient, a larger ``heat_per_a2``). A residual-current trip, a failed
RCD self-test or a welded contactor opens (or cannot open) the contactor and latches a
lockout that only a fault reset clears — and only once the cause is gone and the car is
unplugged. Setpoints are volatile (``power_cycle``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.devices.profile import Table, load_profile
from hil_tests.rig.registers import ExceptionCode, RegisterMap, SimModbusError, SimulatedUnit

HW_MAX_A = 32.0
T_DERATE_C, T_TRIP_C, T_RESUME_C = 60.0, 80.0, 55.0
RESET_MAGIC = 0x00A5
VOLTS = 230.0
# Heidelberg charging_state codes
A1, A2, B1, B2, C1, C2, DERATING, STATE_E, STATE_F, ERR = 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
CP_A, CP_B, CP_C, CP_F = 0, 1, 2, 5


@dataclass
class Car:
    max_current_a: float = 32.0
    phases: int = 3
    wants_charge: bool = True
    ignores_pwm_off: bool = False


class Charger(SimulatedUnit):
    def __init__(
        self,
        unit_id: int,
        *,
        refresh_on_any_request: bool = False,
        ambient_c: float = 25.0,
        heat_per_a2: float = 0.00045,
        cooling_per_s: float = 0.02,
        rng: random.Random | None = None,
    ) -> None:
        profile = load_profile("EVSE-HEC")
        super().__init__(
            profile, RegisterMap.from_points(profile.points, profile.unreadable), unit_id
        )
        self.refresh_on_any_request = refresh_on_any_request
        self.ambient_c = ambient_c
        self.heat_per_a2 = heat_per_a2
        self.cooling_per_s = cooling_per_s
        self.rng = rng or random.Random(unit_id)
        self.car: Car | None = None
        self.temperature_c = ambient_c
        self.current_a = 0.0  # what the car draws per phase
        self.contactor = 0  # 0 open, 1 closed, 2 welded
        self.rcd_status = 0
        self.fault_code = 0
        self.lockout = False
        self.over_temperature = False
        self.failsafe = False
        self.energy_vah = 0.0
        self.energy_total_vah = 0.0
        self.fail_self_test = False
        self._now: float | None = None
        self._last_write = 0.0
        self._pwm_off_since: float | None = None
        self.power_cycle()

    # -- the car and faults -----------------------------------------------------------------

    def plug_in(self, car: Car | None = None) -> None:
        self.car = car or Car()
        self._publish()

    def unplug(self) -> None:
        """Pulling the plug breaks the circuit; the box sees state A and opens at once."""
        self.car = None
        if self.contactor != 2:
            self.contactor = 0
            self.current_a = 0.0
        self._publish()

    def trip_rcd(self, kind: str = "dc") -> None:
        self.rcd_status = 1 if kind == "dc" else 2
        self._lock_out(16 if kind == "dc" else 9)

    def clear_rcd(self) -> None:
        self.rcd_status = 0
        self._publish()

    def weld_contactor(self) -> None:
        self.contactor = 2
        self.fault_code = 7
        self.lockout = True
        self._publish()

    def _lock_out(self, fault_code: int) -> None:
        """Open the contactor immediately and latch until a fault reset (I5)."""
        self.fault_code = fault_code
        self.lockout = True
        if self.contactor != 2:
            self.contactor = 0
            self.current_a = 0.0
        self._publish()

    def power_cycle(self) -> None:
        """Volatile settings return to their defaults (Heidelberg: writes do not persist)."""
        self.regs.put(Table.HOLDING, 257, [15000, 0, 1])
        self.regs.put(Table.HOLDING, 261, [0, 0])
        self.failsafe = False
        self._last_write = self._now or 0.0
        self.set("layout_version", 0x100)
        self.set("hw_max_current", int(HW_MAX_A))
        self.set("hw_min_current", 6)
        self._publish()

    def power_w(self) -> float:
        """Power drawn from the site (W, + = consumption), for the site meter."""
        return self.current_a * VOLTS * (self.car.phases if self.car else 0)

    # -- physics ----------------------------------------------------------------------------

    def advance(self, now: float) -> None:
        if self._now is None:
            self._now = self._last_write = now
        dt, self._now = max(0.0, now - self._now), now
        self._watchdog(now)
        self._thermal(dt)
        target = self._allowed_current()
        self._contactor_and_current(target, dt, now)
        self.energy_vah += self.power_w() * dt / 3600
        self.energy_total_vah += self.power_w() * dt / 3600
        self._publish()

    def _watchdog(self, now: float) -> None:
        timeout_s = self.regs.get(Table.HOLDING, 257, 1)[0] / 1000
        if timeout_s and now - self._last_write > timeout_s:
            self.failsafe = True

    def _thermal(self, dt: float) -> None:
        heating = self.heat_per_a2 * self.current_a**2
        cooling = self.cooling_per_s * (self.temperature_c - self.ambient_c)
        self.temperature_c += (heating - cooling) * dt
        if self.temperature_c >= T_TRIP_C:
            self.over_temperature = True
            self.fault_code = 10
        elif self.over_temperature and self.temperature_c < T_RESUME_C:
            self.over_temperature = False
            if self.fault_code == 10:
                self.fault_code = 0

    def setpoint_a(self) -> float:
        """The current the box allows: setpoint, or the failsafe current after a timeout."""
        reg = 262 if self.failsafe else 261
        return self.regs.get(Table.HOLDING, reg, 1)[0] / 10

    def _allowed_current(self) -> float:
        if self.car is None or not self.car.wants_charge or self.lockout:
            return 0.0
        if self.over_temperature or self.regs.get(Table.HOLDING, 259, 1)[0] == 0:
            return 0.0
        amps = min(self.setpoint_a(), HW_MAX_A, self.car.max_current_a)
        if self.temperature_c >= T_DERATE_C:
            amps /= 2
        return amps if amps >= 6.0 else 0.0

    def _contactor_and_current(self, target: float, dt: float, now: float) -> None:
        if self.contactor == 2:  # welded: the contactor cannot open, current keeps flowing
            return
        if target > 0:
            self._pwm_off_since = None
            self.contactor = 1
            step = 20.0 * dt  # the car follows a new current within ~1–2 s
            self.current_a += max(-step, min(step, target - self.current_a))
            return
        if self._pwm_off_since is None:
            self._pwm_off_since = now
        ignores = self.car is not None and self.car.ignores_pwm_off and not self._in_error()
        if not ignores or now - self._pwm_off_since >= 6.0:
            self.current_a = 0.0
            self.contactor = 0

    def _in_error(self) -> bool:
        """F or ERR: the box opens its contactor at once, whatever the car does."""
        locked = self.regs.get(Table.HOLDING, 259, 1)[0] == 0
        failsafe_error = self.failsafe and self.setpoint_a() == 0
        return self.lockout or self.over_temperature or locked or failsafe_error

    def _state(self) -> tuple[int, int]:
        """(Heidelberg charging_state, cp_state)."""
        if self.lockout or (self.failsafe and self.setpoint_a() == 0):
            return ERR, CP_F
        if self.over_temperature:
            return ERR, CP_F
        if self.regs.get(Table.HOLDING, 259, 1)[0] == 0:
            return STATE_F, CP_F
        allowed = self.setpoint_a() >= 6.0
        if self.car is None:
            return (A2 if allowed else A1), CP_A
        if self.contactor == 1 and self.current_a > 0:
            return (DERATING if self.temperature_c >= T_DERATE_C else C2), CP_C
        return (B2 if allowed else B1), CP_B

    def _publish(self) -> None:
        state, cp = self._state()
        phases = self.car.phases if self.car else 0
        amps = [self.current_a if i < phases else 0.0 for i in range(3)]
        volts = [round(VOLTS + self.rng.uniform(-2, 2)) for _ in range(3)]
        timeout_s = self.regs.get(Table.HOLDING, 257, 1)[0] / 1000
        remaining = max(0.0, timeout_s - ((self._now or 0.0) - self._last_write))
        for name, value in {
            "charging_state": state,
            "l1_current": amps[0],
            "l2_current": amps[1],
            "l3_current": amps[2],
            "temperature": round(self.temperature_c, 1),
            "l1_voltage": volts[0],
            "l2_voltage": volts[1],
            "l3_voltage": volts[2],
            "external_lock": 1,
            "power": min(0xFFFF, round(self.power_w())),
            "energy_since_power_on": int(self.energy_vah) & 0xFFFF_FFFF,
            "energy_total": int(self.energy_total_vah) & 0xFFFF_FFFF,
            "cp_state": cp,
            "contactor": self.contactor,
            "fault_code": self.fault_code,
            "residual_current_status": self.rcd_status,
            "lockout_latched": int(self.lockout),
            "applied_current": self._allowed_current() if self.car else 0.0,
            "failsafe_active": int(self.failsafe),
            "watchdog_remaining": round(remaining * 10) if timeout_s else 0,  # 0.1 s
        }.items():
            self.set(name, value)

    # -- the bus side -----------------------------------------------------------------------

    def read(self, table: Table, address: int, count: int) -> list[int]:
        if self.refresh_on_any_request:
            self.note_request()
        return super().read(table, address, count)

    def note_request(self) -> None:
        self._last_write = self._now or 0.0
        self.failsafe = False

    def on_write(self, table: Table, address: int, values: Sequence[int]) -> None:
        for offset, value in enumerate(values):
            self._check(address + offset, value)
        if address <= 270 < address + len(values):
            self._fault_reset()
        self.regs.put(table, address, values)
        self.regs.put(Table.HOLDING, 270, [0, 0])
        self.note_request()
        if self._in_error() and self.contactor == 1:  # e.g. remote lock: F at once
            self.contactor, self.current_a = 0, 0.0
        self._publish()

    def _check(self, reg: int, value: int) -> None:
        if reg in (261, 262) and not (value == 0 or 60 <= value <= 320):
            raise SimModbusError(ExceptionCode.ILLEGAL_DATA_VALUE, f"{reg}={value}: 0 or 60..320")
        if reg == 259 and value not in (0, 1):
            raise SimModbusError(ExceptionCode.ILLEGAL_DATA_VALUE, f"remote lock {value}")
        if reg == 270 and value != RESET_MAGIC:
            raise SimModbusError(ExceptionCode.ILLEGAL_DATA_VALUE, f"fault reset {value:#x}")
        if reg == 271 and value == 1 and self.fail_self_test:
            self.rcd_status = 3
            self._lock_out(9)

    def _fault_reset(self) -> None:
        charging = self.car is not None and self.contactor != 0
        if self.rcd_status != 0 or self.contactor == 2 or charging or self.car is not None:
            raise SimModbusError(
                ExceptionCode.DEVICE_FAILURE, "fault still present or car still plugged in"
            )
        self.lockout = False
        self.fault_code = 0

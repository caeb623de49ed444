"""The simulated devices behave like the hardware they stand in for (docs/devices.md).

Each model is driven the way the rig drives it: by its public scenario methods (plug in a
car, press the alarm button, force a door) and by its registers, written and read by point
name through the unit's server-facing ``write``/``read`` as the gateway would. Time is a
:class:`Clock` the test moves with ``advance(now)``; nothing here sleeps.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from gateway.devices import codec
from gateway.site import load_site
from hil_tests.gateway_rig import site_config, tcp_bus
from hil_tests.rig.registers import ExceptionCode, SimModbusError, SimulatedUnit
from hil_tests.rig.sim.charger import Car, Charger
from hil_tests.rig.sim.elevator import Elevator
from hil_tests.rig.sim.locker import LockerBoard
from hil_tests.rig.sim.meter import SiteMeter
from hil_tests.rig.sim.pv import GROUND_FAULT, OVER_TEMP, PvInverter, clear_sky
from hil_tests.rig.site import SimulatedSite

pytestmark = pytest.mark.hil

# -- the gateway's view: points by name, through the unit's read/write ----------------------


def read(unit: SimulatedUnit, name: str) -> codec.Value:
    """A point's engineering value, read over the unit's server interface."""
    point = unit.point(name)
    assert point.address is not None
    regs = unit.read(point.table, point.address, point.width)
    return codec.decode(point, regs, _scale_factor(unit, point.scale_factor))


def write(unit: SimulatedUnit, name: str, value: codec.Value) -> None:
    """Write a point's engineering value as one request, as the gateway does."""
    point = unit.point(name)
    assert point.address is not None
    regs = codec.encode(point, value, _scale_factor(unit, point.scale_factor))
    unit.write(point.table, point.address, regs)


def _scale_factor(unit: SimulatedUnit, name: str | None) -> int | None:
    if name is None:
        return None
    sf = read(unit, name)
    assert isinstance(sf, int)
    return sf


def number(unit: SimulatedUnit, name: str) -> float:
    value = read(unit, name)
    assert isinstance(value, (int, float)), f"{name} = {value!r}"
    return float(value)


def label(unit: SimulatedUnit, name: str) -> str:
    """An enum point's value by the name its profile gives it."""
    value = read(unit, name)
    enum = unit.point(name).enum
    assert enum is not None, f"{name} is not an enum"
    assert isinstance(value, int), f"{name} = {value!r}"
    return enum[value]


def bit(unit: SimulatedUnit, name: str, n: int) -> bool:
    """Bit ``n`` of a bitfield point."""
    return bool(int(number(unit, name)) >> n & 1)


def refused(unit: SimulatedUnit, name: str, value: codec.Value) -> ExceptionCode:
    """The exception code a write is answered with (fails if it is accepted)."""
    with pytest.raises(SimModbusError) as excinfo:
        write(unit, name, value)
    return excinfo.value.code


# -- controlled time ------------------------------------------------------------------------


class Advancing(Protocol):
    def advance(self, now: float) -> None: ...


@dataclass
class Clock:
    """Simulated time for a few models: they advance together, in order, in small steps."""

    units: Sequence[Advancing]
    now: float = 1000.0
    step: float = 0.1

    def __post_init__(self) -> None:
        self._advance_to(self.now)

    def _advance_to(self, now: float) -> None:
        self.now = now
        for unit in self.units:
            unit.advance(now)

    def run(self, seconds: float, step: float | None = None) -> None:
        step = step or self.step
        start = self.now
        for i in range(1, round(seconds / step) + 1):
            self._advance_to(start + i * step)  # no drift from summing steps

    def run_until(self, condition: Callable[[], bool], within: float, what: str) -> float:
        """Advance until ``condition`` holds; the simulated seconds it took."""
        started = self.now
        while not condition():
            if self.now - started > within:
                raise AssertionError(f"not {what} within {within} s of simulated time")
            self._advance_to(self.now + self.step)
        return self.now - started


# == charger (EVSE-HEC) =====================================================================

HEARTBEAT_MS = 10_000


def charging_at(
    amps: float,
    car: Car | None = None,
    *,
    ambient_c: float = 25.0,
    heat_per_a2: float = 0.002,
    refresh_on_any_request: bool = False,
) -> tuple[Charger, Clock]:
    """A charger with a car plugged in, charging at ``amps`` (settled), its watchdog off
    (the Heidelberg default of 15 s with failsafe 0 A would end any longer test)."""
    charger = Charger(
        1,
        ambient_c=ambient_c,
        heat_per_a2=heat_per_a2,
        refresh_on_any_request=refresh_on_any_request,
    )
    clock = Clock([charger])
    charger.plug_in(car or Car(max_current_a=32.0))
    write(charger, "watchdog_timeout", 0)
    write(charger, "max_current", amps)
    clock.run(3)
    return charger, clock


def phase_currents(charger: Charger) -> list[float]:
    return [number(charger, f"l{n}_current") for n in (1, 2, 3)]


def test_charger_walks_from_a_to_b_to_c_as_a_car_plugs_in_asks_for_current_and_leaves() -> None:
    charger = Charger(1)
    clock = Clock([charger])
    assert (label(charger, "cp_state"), label(charger, "charging_state")) == ("A", "A1")
    write(charger, "max_current", 16.0)
    assert label(charger, "charging_state") == "A2"

    car = Car(max_current_a=32.0, wants_charge=False)
    charger.plug_in(car)
    clock.run(1)
    assert (label(charger, "cp_state"), label(charger, "charging_state")) == ("B", "B2")
    assert label(charger, "contactor") == "open"

    car.wants_charge = True
    clock.run(2)
    assert (label(charger, "cp_state"), label(charger, "charging_state")) == ("C", "C2")
    assert label(charger, "contactor") == "closed"
    assert phase_currents(charger) == [16.0, 16.0, 16.0]
    assert number(charger, "power") == pytest.approx(16 * 230 * 3, abs=1)

    car.wants_charge = False
    clock.run(0.1)
    assert (label(charger, "cp_state"), label(charger, "contactor")) == ("B", "open")
    assert phase_currents(charger) == [0.0, 0.0, 0.0]

    charger.unplug()
    assert label(charger, "cp_state") == "A"


def test_charger_follows_its_current_setpoint_within_seconds() -> None:
    charger, clock = charging_at(10.0)
    assert number(charger, "l1_current") == 10.0
    write(charger, "max_current", 32.0)
    assert number(charger, "applied_current") == 32.0
    clock.run(2)
    assert phase_currents(charger) == [32.0, 32.0, 32.0]
    write(charger, "max_current", 6.0)
    clock.run(2)
    assert phase_currents(charger) == [6.0, 6.0, 6.0]


def test_charger_current_is_limited_by_the_car_and_a_single_phase_car_uses_l1_only() -> None:
    charger, _ = charging_at(32.0, Car(max_current_a=20.0, phases=1))
    assert phase_currents(charger) == [20.0, 0.0, 0.0]
    assert number(charger, "power") == pytest.approx(20 * 230, abs=1)


def test_zero_amps_pauses_the_charge_and_opens_the_contactor() -> None:
    charger, clock = charging_at(16.0)
    write(charger, "max_current", 0.0)
    clock.run(0.1)
    assert (label(charger, "charging_state"), label(charger, "contactor")) == ("B1", "open")
    assert number(charger, "l1_current") == 0.0


@pytest.mark.parametrize("amps", [1.0, 5.9, 32.1])
def test_charger_refuses_setpoints_it_cannot_signal(amps: float) -> None:
    charger = Charger(1)
    assert refused(charger, "max_current", amps) is ExceptionCode.ILLEGAL_DATA_VALUE
    assert refused(charger, "failsafe_current", amps) is ExceptionCode.ILLEGAL_DATA_VALUE


def test_a_car_that_ignores_pwm_off_is_cut_off_after_six_seconds() -> None:
    charger, clock = charging_at(16.0, Car(ignores_pwm_off=True))
    write(charger, "max_current", 0.0)
    clock.run(5.8)
    assert label(charger, "contactor") == "closed"
    clock.run(0.4)
    assert label(charger, "contactor") == "open"
    assert number(charger, "l1_current") == 0.0


def test_remote_lock_forces_state_f_and_opens_the_contactor_at_once() -> None:
    charger, clock = charging_at(16.0, Car(ignores_pwm_off=True))
    write(charger, "remote_lock", 0)
    assert (label(charger, "cp_state"), label(charger, "charging_state")) == ("F", "F")
    assert label(charger, "contactor") == "open"
    assert phase_currents(charger) == [0.0, 0.0, 0.0]
    write(charger, "remote_lock", 1)
    clock.run(2)
    assert label(charger, "charging_state") == "C2"


def test_charger_falls_back_to_failsafe_current_when_the_gateway_stops_heartbeating() -> None:
    charger, clock = charging_at(16.0)
    write(charger, "failsafe_current", 6.0)
    write(charger, "watchdog_timeout", HEARTBEAT_MS)
    for _ in range(10):  # the gateway heartbeats at timeout/3 for 30 s
        clock.run(3)
        write(charger, "watchdog_timeout", HEARTBEAT_MS)
    assert number(charger, "failsafe_active") == 0
    assert number(charger, "l1_current") == 16.0

    clock.run(9.9)  # the gateway hangs
    assert number(charger, "failsafe_active") == 0
    clock.run(0.2)
    assert number(charger, "failsafe_active") == 1
    assert number(charger, "applied_current") == 6.0
    clock.run(1)
    assert phase_currents(charger) == [6.0, 6.0, 6.0]
    assert label(charger, "cp_state") == "C"


def test_charger_with_zero_failsafe_current_goes_to_the_error_state_on_watchdog_expiry() -> None:
    charger, clock = charging_at(16.0, Car(ignores_pwm_off=True))
    write(charger, "watchdog_timeout", HEARTBEAT_MS)
    clock.run(10.2)
    assert number(charger, "failsafe_active") == 1
    assert (label(charger, "charging_state"), label(charger, "cp_state")) == ("ERR", "F")
    assert label(charger, "contactor") == "open"
    assert phase_currents(charger) == [0.0, 0.0, 0.0]


def test_charger_reports_its_watchdog_remaining_time_in_tenths_of_a_second() -> None:
    charger, clock = charging_at(16.0)
    write(charger, "watchdog_timeout", HEARTBEAT_MS)
    clock.run(2.5)
    assert number(charger, "watchdog_remaining") == 75  # 7.5 s in 0.1 s units


def test_polling_reads_do_not_keep_the_charger_watchdog_alive() -> None:
    charger, clock = charging_at(16.0)
    write(charger, "watchdog_timeout", HEARTBEAT_MS)
    for _ in range(11):  # a hung control loop that still polls
        clock.run(1)
        read(charger, "charging_state")
    assert number(charger, "failsafe_active") == 1


def test_in_any_request_mode_polling_keeps_the_charger_watchdog_alive() -> None:
    charger, clock = charging_at(16.0, refresh_on_any_request=True)
    write(charger, "watchdog_timeout", HEARTBEAT_MS)
    for _ in range(30):
        clock.run(1)
        read(charger, "charging_state")
    assert number(charger, "failsafe_active") == 0


def test_charger_heats_up_with_current() -> None:
    temperatures = []
    for amps in (6.0, 16.0, 32.0):
        charger, clock = charging_at(amps)
        clock.run(15)
        temperatures.append(number(charger, "temperature"))
    assert 25.0 < temperatures[0] < temperatures[1] < temperatures[2] < 60.0


def test_hot_charger_derates_to_half_current() -> None:
    charger, clock = charging_at(32.0, ambient_c=40.0)
    clock.run_until(lambda: label(charger, "charging_state") == "derating", 120, "derating")
    assert number(charger, "temperature") >= 60.0
    clock.run(2)
    assert number(charger, "l1_current") == 16.0
    assert label(charger, "cp_state") == "C"


def test_overheated_charger_trips_then_resumes_once_cooled_below_the_hysteresis() -> None:
    charger, clock = charging_at(32.0, ambient_c=40.0, heat_per_a2=0.005)
    clock.run_until(lambda: label(charger, "fault_code") == "over-temperature", 300, "trip")
    assert number(charger, "temperature") >= 80.0
    assert (label(charger, "charging_state"), label(charger, "cp_state")) == ("ERR", "F")
    assert label(charger, "contactor") == "open"
    assert number(charger, "l1_current") == 0.0
    clock.run_until(lambda: label(charger, "cp_state") == "C", 300, "charging again")
    assert number(charger, "temperature") <= 55.0
    assert label(charger, "fault_code") == "none"


def test_rcd_trip_opens_the_contactor_and_latches_until_fault_cleared_car_gone_and_reset() -> None:
    charger, clock = charging_at(16.0, Car(ignores_pwm_off=True))
    charger.trip_rcd("dc")
    assert label(charger, "contactor") == "open"  # immediately, not on the next tick
    assert phase_currents(charger) == [0.0, 0.0, 0.0]
    assert (label(charger, "charging_state"), label(charger, "cp_state")) == ("ERR", "F")
    assert number(charger, "lockout_latched") == 1
    assert label(charger, "fault_code") == "dc-residual-current"
    assert label(charger, "residual_current_status") == "dc-trip"

    write(charger, "max_current", 16.0)  # the gateway cannot restart it
    clock.run(10)
    assert (label(charger, "cp_state"), label(charger, "contactor")) == ("F", "open")

    assert refused(charger, "fault_reset", 0xA5) is ExceptionCode.DEVICE_FAILURE
    charger.clear_rcd()
    assert refused(charger, "fault_reset", 0xA5) is ExceptionCode.DEVICE_FAILURE  # car in
    charger.unplug()
    clock.run(1)
    assert number(charger, "lockout_latched") == 1  # no auto-reset
    write(charger, "fault_reset", 0xA5)
    clock.run(0.1)
    assert number(charger, "lockout_latched") == 0
    assert (label(charger, "fault_code"), label(charger, "cp_state")) == ("none", "A")

    charger.plug_in(Car())
    clock.run(2)
    assert label(charger, "charging_state") == "C2"


def test_ac_residual_current_trip_reports_the_rcd_module() -> None:
    charger, _ = charging_at(16.0)
    charger.trip_rcd("ac")
    assert label(charger, "residual_current_status") == "ac-trip"
    assert label(charger, "fault_code") == "rcd-module"
    assert label(charger, "contactor") == "open"


def test_failed_rcd_self_test_locks_the_charger_out_and_a_passed_one_changes_nothing() -> None:
    charger, clock = charging_at(16.0)
    write(charger, "rcd_self_test", 1)
    clock.run(1)
    assert (label(charger, "residual_current_status"), label(charger, "cp_state")) == ("ok", "C")

    charger.fail_self_test = True
    write(charger, "rcd_self_test", 1)
    assert label(charger, "residual_current_status") == "self-test-failed"
    assert number(charger, "lockout_latched") == 1
    assert label(charger, "contactor") == "open"
    assert number(charger, "l1_current") == 0.0


def test_welded_contactor_keeps_current_flowing_and_cannot_be_reset() -> None:
    charger, clock = charging_at(16.0)
    charger.weld_contactor()
    write(charger, "max_current", 0.0)
    clock.run(10)
    assert label(charger, "contactor") == "welded"
    assert number(charger, "l1_current") == 16.0
    assert number(charger, "lockout_latched") == 1
    charger.unplug()
    assert refused(charger, "fault_reset", 0xA5) is ExceptionCode.DEVICE_FAILURE


def test_power_cycle_forgets_the_volatile_setpoints() -> None:
    charger, clock = charging_at(16.0)
    write(charger, "watchdog_timeout", 60_000)
    write(charger, "failsafe_current", 10.0)
    charger.power_cycle()
    clock.run(0.1)
    assert number(charger, "max_current") == 0.0
    assert number(charger, "failsafe_current") == 0.0
    assert number(charger, "watchdog_timeout") == 15_000
    assert label(charger, "charging_state") == "B1"


SETPOINTS = st.sampled_from([0.0, 6.0, 10.0, 16.0, 32.0])
CARS = st.builds(
    Car,
    max_current_a=st.sampled_from([6.0, 10.0, 16.0, 32.0]),
    phases=st.sampled_from([1, 3]),
    wants_charge=st.booleans(),
    ignores_pwm_off=st.booleans(),
)
#: the car follows a new advertised current within this (20 A/s ramp, 0.5 s ticks)
SETTLE_S = 2.0


class ChargerUnderArbitraryUse(RuleBasedStateMachine):
    """Cars come and go, the gateway writes what it likes or falls silent, faults happen:
    whatever the order, the charger never energises outside state C or above what it
    advertises, and never in F."""

    def __init__(self) -> None:
        super().__init__()
        self.charger = Charger(1, heat_per_a2=0.004)
        self.clock = Clock([self.charger], step=0.5)
        self.drawn = 0.0

    @rule(car=CARS)
    def plug_in(self, car: Car) -> None:
        if self.charger.car is None:
            self.charger.plug_in(car)

    @rule()
    def unplug(self) -> None:
        self.charger.unplug()

    @rule(wants=st.booleans())
    def car_requests_charge(self, wants: bool) -> None:
        if self.charger.car is not None:
            self.charger.car.wants_charge = wants

    @rule(amps=SETPOINTS)
    def set_max_current(self, amps: float) -> None:
        write(self.charger, "max_current", amps)

    @rule(amps=SETPOINTS)
    def set_failsafe_current(self, amps: float) -> None:
        write(self.charger, "failsafe_current", amps)

    @rule(timeout_ms=st.sampled_from([0, 1000, 5000, 15000]))
    def heartbeat(self, timeout_ms: int) -> None:
        write(self.charger, "watchdog_timeout", timeout_ms)

    @rule(locked=st.booleans())
    def remote_lock(self, locked: bool) -> None:
        write(self.charger, "remote_lock", 0 if locked else 1)

    @rule(kind=st.sampled_from(["dc", "ac"]))
    def trip_rcd(self, kind: str) -> None:
        self.charger.trip_rcd(kind)

    @rule()
    def clear_rcd(self) -> None:
        self.charger.clear_rcd()

    @rule()
    def try_fault_reset(self) -> None:
        with contextlib.suppress(SimModbusError):  # refused while the cause persists
            write(self.charger, "fault_reset", 0xA5)

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 5.0, 7.0, 20.0, 60.0]))
    def time_passes(self, seconds: float) -> None:
        advertised = number(self.charger, "applied_current")
        steady_since = self.clock.now
        for _ in range(round(seconds / self.clock.step)):
            self.clock.run(self.clock.step)
            now_advertised = number(self.charger, "applied_current")
            if now_advertised != advertised:
                advertised, steady_since = now_advertised, self.clock.now
        car = self.charger.car
        grace = 6.5 if car is not None and car.ignores_pwm_off else SETTLE_S
        if self.clock.now - steady_since >= grace:  # the car has had time to follow
            assert number(self.charger, "l1_current") <= advertised

    @invariant()
    def current_flows_only_in_state_c_through_a_closed_contactor(self) -> None:
        if any(a > 0 for a in phase_currents(self.charger)):
            assert label(self.charger, "cp_state") == "C"
            assert label(self.charger, "contactor") == "closed"

    @invariant()
    def never_energised_in_f_or_locked_out(self) -> None:
        if label(self.charger, "cp_state") == "F" or number(self.charger, "lockout_latched"):
            assert label(self.charger, "contactor") == "open"
            assert phase_currents(self.charger) == [0.0, 0.0, 0.0]

    @invariant()
    def advertised_current_never_exceeds_the_setpoint_in_force(self) -> None:
        failsafe = number(self.charger, "failsafe_active") == 1
        setpoint = number(self.charger, "failsafe_current" if failsafe else "max_current")
        assert number(self.charger, "applied_current") <= min(setpoint, 32.0)

    @invariant()
    def the_car_never_draws_more_than_advertised_or_than_it_can(self) -> None:
        drawn = number(self.charger, "l1_current")
        assert drawn <= max(number(self.charger, "applied_current"), self.drawn)
        car = self.charger.car
        if car is not None:
            assert drawn <= car.max_current_a
        self.drawn = drawn


def test_charger_state_machine_never_energises_outside_c_above_setpoint_or_in_f() -> None:
    run_state_machine_as_test(
        ChargerUnderArbitraryUse,
        settings=settings(max_examples=100, stateful_step_count=30, deadline=None),
    )


# == elevator (ELV-24476) ===================================================================

#: docs/devices.md#elv-24476-message-codes: Message_Code → bit of Fault_Bitmap
FAULT_TABLE = {1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6, 8: 7}
FAULT_TABLE |= {90: 8, 91: 9, 92: 10, 93: 11, 94: 12, 95: 13, 96: 14}


def at_rest(elevator: Elevator) -> bool:
    stopped = label(elevator, "car_status") == "stopped"
    return stopped and label(elevator, "car_door_state") == "closed"


def elevator_at(floor: int) -> tuple[Elevator, Clock]:
    """An elevator standing at ``floor`` with its doors closed, its gateway watchdog off
    (at the default 30 s it would drop the remote requests of any longer test)."""
    elevator = Elevator(1)
    clock = Clock([elevator])
    write(elevator, "gw_watchdog_timeout", 0)
    if floor != elevator.lowest:
        elevator.call(floor)
        clock.run_until(lambda: number(elevator, "car_position") == floor, 60, "there")
        clock.run_until(lambda: at_rest(elevator), 30, "doors closed")
    return elevator, clock


def test_elevator_travels_to_a_called_floor_and_cycles_its_doors() -> None:
    elevator, clock = elevator_at(1)
    elevator.call(4)
    clock.run(1)
    assert (label(elevator, "car_status"), label(elevator, "car_direction")) == ("running", "up")
    assert number(elevator, "car_speed") == 1000
    assert number(elevator, "door_zone") == 0
    assert number(elevator, "door_close_status") == 1

    took = clock.run_until(lambda: label(elevator, "car_door_state") == "opening", 20, "arrival")
    assert 7.5 < took < 9.5  # 9 m at 1 m/s
    assert (number(elevator, "car_position"), number(elevator, "door_zone")) == (4, 1)
    assert number(elevator, "door_close_status") == 0
    clock.run_until(lambda: label(elevator, "car_door_state") == "open", 3, "doors open")
    clock.run_until(lambda: label(elevator, "car_door_state") == "closing", 4, "doors closing")
    clock.run_until(lambda: label(elevator, "car_door_state") == "closed", 3, "doors closed")
    assert number(elevator, "trip_counter") == 1
    assert number(elevator, "door_open_count") == 1

    elevator.call(2)
    clock.run(1)
    assert label(elevator, "car_direction") == "down"
    assert number(elevator, "car_speed") == -1000
    clock.run_until(lambda: number(elevator, "car_position") == 2 and at_rest(elevator), 30, "2")


def test_elevator_carries_passengers_and_reports_load_and_overload() -> None:
    elevator, clock = elevator_at(1)
    elevator.board(3)
    clock.run(0.1)
    assert number(elevator, "passenger_status") == 1
    assert number(elevator, "load_pct") == 3 * 80 * 100 // 630
    elevator.board(6)
    clock.run(0.1)
    assert number(elevator, "overload") == 1
    elevator.alight(9)
    clock.run(0.1)
    assert (number(elevator, "passenger_status"), number(elevator, "load_pct")) == (0, 0)


@pytest.mark.parametrize(("code", "bit_no"), sorted(FAULT_TABLE.items()))
def test_every_fault_code_of_table_1_3_appears_in_message_code_and_fault_bitmap(
    code: int, bit_no: int
) -> None:
    elevator, clock = elevator_at(1)
    elevator.raise_fault(code)
    clock.run(0.1)
    assert number(elevator, "message_code") == code
    assert number(elevator, "fault_bitmap") == 1 << bit_no
    assert number(elevator, "alarm_button") == int(code == 90)
    elevator.clear_fault(code)
    clock.run(0.1)
    assert (number(elevator, "message_code"), number(elevator, "fault_bitmap")) == (0, 0)


def test_message_code_reports_the_most_severe_of_several_faults() -> None:
    elevator, clock = elevator_at(1)
    elevator.raise_fault(90)
    elevator.raise_fault(1)
    clock.run(0.1)
    assert number(elevator, "message_code") == 1
    assert bit(elevator, "fault_bitmap", 0)
    assert bit(elevator, "fault_bitmap", 8)
    elevator.clear_fault(1)
    clock.run(0.1)
    assert number(elevator, "message_code") == 90


def test_a_code_outside_table_1_3_cannot_be_raised() -> None:
    with pytest.raises(ValueError, match=r"table 1\.3"):
        Elevator(1).raise_fault(42)


def test_a_safety_chain_fault_stops_the_car_where_it_is_until_cleared() -> None:
    elevator, clock = elevator_at(1)
    elevator.call(6)
    clock.run(4)
    elevator.raise_fault(1)  # safety circuit open while running
    clock.run(0.1)
    assert label(elevator, "car_status") == "stopped"
    assert number(elevator, "door_zone") == 0
    clock.run(30)
    assert label(elevator, "car_status") == "stopped"
    assert label(elevator, "car_door_state") == "closed"
    elevator.clear_fault(1)
    clock.run_until(lambda: number(elevator, "car_position") == 6, 30, "floor 6")


def test_an_alarm_button_press_does_not_stop_the_car() -> None:
    elevator, clock = elevator_at(1)
    elevator.call(3)
    clock.run(2)
    elevator.raise_fault(90)
    clock.run_until(lambda: number(elevator, "car_position") == 3, 10, "floor 3")


def test_a_trapped_passenger_can_be_staged_at_a_landing() -> None:
    elevator, clock = elevator_at(3)
    elevator.trap_passengers(people=2)
    elevator.call(5)  # the car does not answer while people are trapped
    clock.run(60)
    assert label(elevator, "car_status") == "stopped"
    assert (label(elevator, "car_door_state"), number(elevator, "door_close_status")) == (
        "closed",
        1,
    )
    assert number(elevator, "passenger_status") == 1
    assert (number(elevator, "car_position"), number(elevator, "door_zone")) == (3, 1)
    assert number(elevator, "message_code") == 0  # detecting it is the gateway's job (I6)
    elevator.release()
    clock.run_until(lambda: label(elevator, "car_door_state") == "open", 3, "doors open")
    assert number(elevator, "car_position") == 3


def test_a_trapped_passenger_can_be_staged_between_floors() -> None:
    elevator, clock = elevator_at(2)
    elevator.trap_passengers(between_floors=True)
    clock.run(10)
    assert number(elevator, "door_zone") == 0
    assert label(elevator, "car_door_state") == "closed"
    assert number(elevator, "passenger_status") == 1


def test_out_of_service_request_parks_the_car_until_returned_to_service() -> None:
    elevator, clock = elevator_at(1)
    write(elevator, "req_out_of_service", 1)
    clock.run(0.1)
    assert label(elevator, "service_mode") == "stop-service"
    elevator.call(5)
    clock.run(20)
    assert number(elevator, "car_position") == 1
    write(elevator, "req_out_of_service", 0)
    clock.run_until(lambda: number(elevator, "car_position") == 5, 20, "floor 5")
    assert label(elevator, "service_mode") == "normal"


def test_fire_recall_sends_the_car_to_the_recall_floor_and_parks_it_with_doors_open() -> None:
    elevator, clock = elevator_at(5)
    write(elevator, "req_fire_recall", 1)
    clock.run(0.1)
    assert label(elevator, "service_mode") == "fire-return"
    assert label(elevator, "fire_recall_feedback") == "recall-in-progress"
    clock.run_until(lambda: label(elevator, "fire_recall_feedback") == "parked", 20, "parked")
    assert number(elevator, "car_position") == 1
    assert label(elevator, "car_door_state") == "open"
    elevator.call(4)
    clock.run(60)
    assert label(elevator, "car_door_state") == "open"
    assert label(elevator, "fire_recall_feedback") == "parked"

    write(elevator, "req_fire_recall", 0)
    clock.run(0.1)
    assert label(elevator, "service_mode") == "normal"
    assert label(elevator, "fire_recall_feedback") == "none"
    clock.run_until(lambda: number(elevator, "car_position") == 4, 30, "floor 4")


def test_fire_recall_at_the_recall_floor_opens_the_doors_and_reports_parked() -> None:
    elevator, clock = elevator_at(1)
    write(elevator, "req_fire_recall", 1)
    clock.run_until(lambda: label(elevator, "fire_recall_feedback") == "parked", 5, "parked")


def test_fire_recall_closes_doors_open_at_another_floor_and_leaves() -> None:
    elevator, clock = elevator_at(1)
    elevator.call(4)
    clock.run_until(lambda: label(elevator, "car_door_state") == "open", 20, "open at 4")
    write(elevator, "req_fire_recall", 1)
    clock.run_until(lambda: label(elevator, "fire_recall_feedback") == "parked", 30, "parked")
    assert number(elevator, "car_position") == 1


def test_fire_recall_overrides_a_car_parked_out_of_service() -> None:
    elevator, clock = elevator_at(4)
    write(elevator, "req_out_of_service", 1)
    clock.run(1)
    write(elevator, "req_fire_recall", 1)
    clock.run_until(lambda: label(elevator, "fire_recall_feedback") == "parked", 20, "parked")


def test_out_of_service_request_is_not_honoured_during_fire_recall() -> None:
    elevator, clock = elevator_at(1)
    elevator.hardwired_fire_recall(True)
    clock.run(1)
    write(elevator, "req_out_of_service", 1)
    clock.run(5)
    assert label(elevator, "service_mode") == "fire-return"


def test_elevator_drops_remote_requests_when_the_gateway_heartbeat_stops() -> None:
    elevator, clock = elevator_at(1)
    write(elevator, "gw_watchdog_timeout", 10)
    write(elevator, "req_out_of_service", 1)
    for beat in range(10):
        clock.run(3)
        write(elevator, "gw_heartbeat", beat)
    assert label(elevator, "service_mode") == "stop-service"
    assert number(elevator, "remaining_watchdog") == 10

    clock.run(9.5)
    assert number(elevator, "req_out_of_service") == 1
    clock.run(0.6)
    assert number(elevator, "req_out_of_service") == 0
    assert number(elevator, "remaining_watchdog") == 0
    clock.run(0.1)
    assert label(elevator, "service_mode") == "normal"  # autonomous again, never stranded


def test_hardwired_fire_recall_works_without_a_gateway() -> None:
    elevator, clock = elevator_at(6)
    write(elevator, "gw_watchdog_timeout", 5)
    clock.run(10)  # the gateway is gone
    elevator.hardwired_fire_recall(True)
    clock.run_until(lambda: label(elevator, "fire_recall_feedback") == "parked", 30, "parked")
    assert number(elevator, "car_position") == 1


def test_elevator_cps_heartbeat_counts_seconds() -> None:
    elevator, clock = elevator_at(1)
    before = number(elevator, "cps_heartbeat")
    clock.run(5)
    assert number(elevator, "cps_heartbeat") - before == 5


def test_elevator_reports_mains_loss() -> None:
    elevator, clock = elevator_at(1)
    elevator.cut_power()
    clock.run(0.1)
    assert label(elevator, "main_power") == "mains-lost"
    assert label(elevator, "service_mode") == "emergency-power"


# == locker board (LCK-16) ==================================================================


def locker() -> tuple[LockerBoard, Clock]:
    board = LockerBoard(2)
    return board, Clock([board], now=0.0)


def all_locked(board: LockerBoard) -> bool:
    return number(board, "locked_bitmap") == 0xFFFF


def test_unlock_pulses_the_lock_for_the_pulse_time_then_the_coil_clears_itself() -> None:
    board, clock = locker()
    write(board, "unlock_pulse", 2.0)
    write(board, "unlock_3", True)
    assert read(board, "unlock_3") is True
    assert read(board, "door_locked_3") is False
    assert not bit(board, "locked_bitmap", 2)
    assert number(board, "last_unlock_result") == 3 << 8
    clock.run(1.9)
    assert read(board, "unlock_3") is True
    clock.run(0.2)
    assert read(board, "unlock_3") is False
    assert read(board, "door_locked_3") is False  # the leaf sprang open

    board.close_door(3)
    clock.run(0.1)
    assert read(board, "door_locked_3") is True
    assert all_locked(board)


def test_default_unlock_pulse_is_half_a_second() -> None:
    board, clock = locker()
    assert number(board, "unlock_pulse") == 0.5
    write(board, "unlock_1", True)
    clock.run(0.4)
    assert read(board, "unlock_1") is True
    clock.run(0.2)
    assert read(board, "unlock_1") is False


def test_writing_zero_to_an_unlock_coil_does_nothing() -> None:
    board, clock = locker()
    write(board, "unlock_1", False)
    clock.run(1)
    assert all_locked(board)


def test_item_present_sensor_follows_deposits_and_pickups() -> None:
    board, clock = locker()
    write(board, "unlock_9", True)
    board.deposit(9)
    board.close_door(9)
    clock.run(0.1)
    assert read(board, "item_present_9") is True
    assert number(board, "item_bitmap") == 1 << 8
    write(board, "unlock_9", True)
    board.pickup(9)
    clock.run(0.1)
    assert read(board, "item_present_9") is False
    assert number(board, "item_bitmap") == 0
    with pytest.raises(ValueError, match="shut"):
        board.deposit(10)


def test_forced_open_door_raises_the_tamper_alarm_until_its_next_unlock_command() -> None:
    board, clock = locker()
    board.force_open(5)
    clock.run(0.1)
    assert read(board, "door_locked_5") is False
    assert number(board, "forced_open_bitmap") == 1 << 4
    board.close_door(5)
    clock.run(0.1)
    assert bit(board, "forced_open_bitmap", 4)  # latched: shutting it is not enough
    write(board, "unlock_5", True)
    clock.run(0.1)
    assert number(board, "forced_open_bitmap") == 0


def test_door_left_open_longer_than_the_alarm_time_is_flagged() -> None:
    board, clock = locker()
    write(board, "door_open_alarm_s", 30)
    write(board, "unlock_2", True)
    clock.run(29.9)
    assert number(board, "door_open_too_long_bitmap") == 0
    clock.run(0.2)
    assert number(board, "door_open_too_long_bitmap") == 1 << 1
    board.close_door(2)
    clock.run(0.1)
    assert number(board, "door_open_too_long_bitmap") == 0


def test_unlock_all_needs_the_two_step_arm_within_five_seconds() -> None:
    board, clock = locker()
    assert refused(board, "unlock_all", True) is ExceptionCode.DEVICE_FAILURE
    write(board, "unlock_all_arm", 0x5AA5)
    clock.run(5.1)
    assert number(board, "unlock_all_arm") == 0
    assert refused(board, "unlock_all", True) is ExceptionCode.DEVICE_FAILURE
    assert all_locked(board)

    write(board, "unlock_all_arm", 0x5AA5)
    clock.run(4)
    write(board, "unlock_all", True)
    clock.run(0.1)
    assert number(board, "locked_bitmap") == 0xFFFE  # one door at a time
    clock.run(16 * 0.5)
    assert number(board, "locked_bitmap") == 0


def test_a_wrong_arm_value_is_refused() -> None:
    board, _ = locker()
    assert refused(board, "unlock_all_arm", 0x1234) is ExceptionCode.ILLEGAL_DATA_VALUE


def test_locker_is_fail_secure_when_the_gateway_heartbeat_stops() -> None:
    board, clock = locker()
    write(board, "gw_watchdog_timeout", 10)
    for beat in range(10):
        clock.run(3)
        write(board, "gw_heartbeat", beat)
    write(board, "unlock_1", True)
    board.close_door(1)
    clock.run(10.1)
    assert refused(board, "unlock_2", True) is ExceptionCode.DEVICE_FAILURE
    clock.run(60)
    assert all_locked(board)  # and nothing opens by itself
    write(board, "gw_heartbeat", 99)
    write(board, "unlock_2", True)
    assert read(board, "door_locked_2") is False


def test_watchdog_expiry_drops_the_rest_of_a_queued_unlock_all() -> None:
    board, clock = locker()
    write(board, "unlock_pulse", 1.0)
    write(board, "gw_watchdog_timeout", 5)
    write(board, "gw_heartbeat", 1)
    write(board, "unlock_all_arm", 0x5AA5)
    write(board, "unlock_all", True)
    clock.run(30)
    opened = [not read(board, f"door_locked_{n}") for n in range(1, 17)]
    assert opened[0]
    assert not opened[15]
    assert 4 <= sum(opened) <= 7  # those pulsed before the heartbeat went stale


def test_lock_driver_fault_reports_that_the_hook_did_not_open() -> None:
    board, clock = locker()
    board.lock_driver_fault(7)
    write(board, "unlock_7", True)
    clock.run(0.1)
    assert number(board, "last_unlock_result") == (7 << 8) | 1
    assert read(board, "door_locked_7") is True
    assert bit(board, "board_status", 0)


def test_locker_board_heartbeat_counts_seconds_from_the_first_tick() -> None:
    board, clock = locker()
    clock.run(5)
    assert number(board, "board_heartbeat") == 5


# == PV inverter (SunSpec 1, 103, 120–123) ==================================================


@dataclass
class Sky:
    """An irradiance the test sets by hand (0..1 of the inverter's rating)."""

    level: float = 0.8

    def __call__(self, now: float) -> float:
        return self.level


def inverter(sky: Sky) -> tuple[PvInverter, Clock]:
    pv = PvInverter(1, irradiance=sky)
    clock = Clock([pv])
    clock.run(2)
    return pv, clock


def test_pv_power_follows_the_irradiance() -> None:
    sky = Sky(0.5)
    pv, clock = inverter(sky)
    assert number(pv, "w") == 5000
    assert label(pv, "st") == "MPPT"
    sky.level = 0.2
    clock.run(1)
    assert number(pv, "w") == 2000
    assert number(pv, "dcw") > 2000  # conversion losses
    sky.level = 0.0
    clock.run(1)
    assert number(pv, "w") == 0
    assert label(pv, "st") == "SLEEPING"


def test_pv_energy_counter_accumulates() -> None:
    pv, clock = inverter(Sky(0.5))
    clock.run(3600, step=10.0)
    assert number(pv, "wh") == pytest.approx(5000, rel=0.01)


def test_power_limit_caps_output_only_while_enabled() -> None:
    pv, clock = inverter(Sky(0.8))
    write(pv, "wmaxlimpct", 30)
    clock.run(2)
    assert number(pv, "w") == 8000  # written, not yet enabled
    write(pv, "wmaxlim_ena", 1)
    clock.run(2)
    assert number(pv, "w") == 3000
    assert label(pv, "st") == "THROTTLED"
    write(pv, "wmaxlim_ena", 0)
    clock.run(2)
    assert number(pv, "w") == 8000


def test_power_limit_reverts_to_no_limit_after_the_revert_timeout() -> None:
    pv, clock = inverter(Sky(0.8))
    write(pv, "wmaxlimpct_rvrttms", 60)
    write(pv, "wmaxlimpct", 30)
    write(pv, "wmaxlim_ena", 1)
    clock.run(59)
    assert number(pv, "w") == 3000
    clock.run(1.1)
    assert label(pv, "wmaxlim_ena") == "DISABLED"
    clock.run(2)
    assert number(pv, "w") == 8000
    assert label(pv, "st") == "MPPT"


def test_rewriting_the_limit_restarts_the_revert_timer() -> None:
    pv, clock = inverter(Sky(0.8))
    write(pv, "wmaxlimpct_rvrttms", 60)
    write(pv, "wmaxlimpct", 30)
    write(pv, "wmaxlim_ena", 1)
    for _ in range(5):  # the gateway refreshes at RvrtTms/3
        clock.run(20)
        write(pv, "wmaxlimpct", 30)
    clock.run(50)
    assert number(pv, "w") == 3000
    assert label(pv, "wmaxlim_ena") == "ENABLED"


def test_power_limit_without_a_revert_time_holds() -> None:
    pv, clock = inverter(Sky(0.8))
    write(pv, "wmaxlimpct", 50)
    write(pv, "wmaxlim_ena", 1)
    clock.run(7200, step=10.0)
    assert number(pv, "w") == 5000  # 50 % of WMax (10 kW), below the 8 kW available


def test_power_limit_above_100_percent_is_refused() -> None:
    pv, _ = inverter(Sky(0.8))
    assert refused(pv, "wmaxlimpct", 101) is ExceptionCode.ILLEGAL_DATA_VALUE


def test_disconnect_stops_output_and_reconnects_after_conn_revert_time() -> None:
    pv, clock = inverter(Sky(0.8))
    write(pv, "conn_rvrttms", 30)
    write(pv, "conn", 0)
    clock.run(0.1)
    assert number(pv, "w") == 0
    assert label(pv, "st") == "OFF"
    assert not bit(pv, "pvconn", 0)
    clock.run(29.5)
    assert label(pv, "conn") == "DISCONNECT"
    clock.run(2)
    assert label(pv, "conn") == "CONNECT"
    assert number(pv, "w") == 8000


@pytest.mark.parametrize("event", [GROUND_FAULT, OVER_TEMP])
def test_inverter_faults_stop_output_and_are_reported_in_evt1(event: int) -> None:
    pv, clock = inverter(Sky(0.8))
    pv.raise_event(event)
    clock.run(0.1)
    assert (number(pv, "w"), label(pv, "st")) == (0, "FAULT")
    assert number(pv, "evt1") == 1 << event
    pv.clear_event(event)
    clock.run(2)
    assert (number(pv, "w"), label(pv, "st")) == (8000, "MPPT")


@settings(max_examples=50)
@given(start=st.floats(min_value=0.0, max_value=1e9))
def test_clear_sky_shines_from_the_first_moment_whatever_the_clock_reads(start: float) -> None:
    curve = clear_sky()
    assert curve(start) > 0.3
    assert curve(start + 60.0) > 0.3


def test_clear_sky_has_a_noon_and_a_night() -> None:
    curve = clear_sky(day_s=1200.0, start_phase=0.0)
    assert curve(0.0) == 0.0  # sunrise
    assert curve(300.0) == pytest.approx(1.0)  # noon
    assert curve(900.0) == 0.0  # midnight
    assert curve(1200.0 + 300.0) == pytest.approx(1.0)  # the next noon


def example_site() -> Path:
    return Path(str(resources.files("gateway.examples").joinpath("community.toml")))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=st.sampled_from([0.0, 300.0, 450.0, 86_400.0 * 3 + 451.0, 1e6 + 0.5]))
def test_a_lively_demo_site_shows_pv_power_from_the_start(start: float) -> None:
    site = SimulatedSite(load_site(example_site()), lively=True)
    inverters = [u for u in site.units.values() if isinstance(u, PvInverter)]
    assert inverters
    Clock(list(site.units.values()), now=start).run(2)  # type: ignore[arg-type]
    assert all(number(pv, "w") > 1000 for pv in inverters)


# == site meter (SunSpec 203) ===============================================================


def test_meter_imports_the_sum_of_the_loads_minus_pv() -> None:
    charger = Charger(1)
    pv = PvInverter(2, irradiance=Sky(0.5))
    meter = SiteMeter(3, [charger.power_w, pv.power_w], base_load_w=3000.0)
    clock = Clock([charger, pv, meter])
    charger.plug_in(Car(phases=3))
    write(charger, "max_current", 16.0)
    clock.run(3)
    expected = 3000 + 16 * 230 * 3 - 5000
    assert number(meter, "w") == pytest.approx(expected, abs=10)  # W_SF = 1
    assert number(meter, "w") > 0
    assert number(meter, "a") == pytest.approx(expected / 230, abs=0.1)


def test_meter_goes_negative_when_the_site_exports_and_counts_exported_energy() -> None:
    pv = PvInverter(2, irradiance=Sky(0.8))
    meter = SiteMeter(3, [pv.power_w], base_load_w=3000.0)
    clock = Clock([pv, meter])
    clock.run(2)
    assert number(meter, "w") == pytest.approx(3000 - 8000, abs=10)
    assert sum(number(meter, f"wph{p}") for p in "abc") == pytest.approx(-5000, abs=30)
    clock.run(3600, step=10.0)
    assert number(meter, "totwhexp") == pytest.approx(5000, rel=0.01)
    assert number(meter, "totwhimp") == 0


def test_site_meter_sums_the_sites_own_chargers_and_pv() -> None:
    config = site_config(
        tcp_bus("lan"),
        [
            ("charger-1", "EVSE-HEC", "lan", 1),
            ("charger-2", "EVSE-HEC", "lan", 2),
            ("pv", "SUNSPEC-INV", "lan", 3),
            ("meter", "SUNSPEC-METER", "lan", 4),
        ],
    )
    site = SimulatedSite(config, lively=False)
    charger = site.unit("charger-1")
    pv, meter = site.unit("pv"), site.unit("meter")
    assert isinstance(charger, Charger)
    clock = Clock(list(site.units.values()))  # type: ignore[arg-type]
    charger.plug_in(Car(phases=3))
    write(charger, "max_current", 10.0)
    clock.run(3)
    loads = 10 * 230 * 3
    generation = number(pv, "w")
    assert generation > 0
    assert number(meter, "w") == pytest.approx(3000 + loads - generation, abs=10)


def test_meter_sign_convention_is_import_positive() -> None:
    loads = SiteMeter(1, [lambda: 2000.0], base_load_w=0.0)
    pv_only = SiteMeter(2, [lambda: -2000.0], base_load_w=0.0)
    clock = Clock([loads, pv_only])
    clock.run(0.1)
    assert math.copysign(1, number(loads, "w")) == 1
    assert math.copysign(1, number(pv_only, "w")) == -1

"""I8 and the alarms a person reads when devices stop answering: one cause, one alarm."""

from __future__ import annotations

from gateway.control.actuator import Actuator
from gateway.control.alarms import AlarmLog
from gateway.control.engine import InterlockEngine
from gateway.control.standard.controllers import CommLoss
from gateway.control.standard.interlocks import (
    ChargerTemperature,
    FireAlarm,
    Safety,
    Scope,
    TrappedPassenger,
    build,
)
from gateway.devices.profile import Profile, load_profile
from gateway.image import ProcessImage, Quality

PROFILES: dict[str, Profile] = {
    "sio": load_profile("SIO-1"),
    "lift": load_profile("ELV-24476"),
    "lockers": load_profile("LCK-16"),
    "charger-1": load_profile("EVSE-HEC"),
}
BUSES = {"sio": ("usb", 1), "lift": ("rs485-1", 3), "lockers": ("rs485-1", 4)}
BUSES["charger-1"] = ("tcp-1", 1)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def site() -> tuple[Clock, ProcessImage, InterlockEngine]:
    clock = Clock()
    image = ProcessImage(clock)
    for device, profile in PROFILES.items():
        for point in profile.points:
            image.declare(device, point.name, stale_after_s=3600.0)  # only OFFLINE matters here
    safety = Safety(
        fire_alarm=FireAlarm(),
        trapped_passenger=TrappedPassenger(),
        elevator_safety=Scope(),
        charger_temperature=ChargerTemperature(),
        charger_lockout=Scope(),
        comm_loss=Scope(),
    )
    engine = InterlockEngine(
        build(safety, PROFILES), PROFILES, image, Actuator(image), AlarmLog(clock=clock)
    )
    engine.controllers.append(CommLoss(BUSES, engine))
    healthy(image)
    return clock, image, engine


def healthy(image: ProcessImage) -> None:
    for device, profile in PROFILES.items():
        for point in profile.points:
            image.update(device, point.name, 0)
    image.update("sio", "fire_alarm_loop", True)  # healthy-closed
    image.update("lift", "car_status", 1)  # running, not stopped
    image.update("lift", "fire_recall_feedback", 0)


def run(clock: Clock, engine: InterlockEngine, seconds: float) -> None:
    for _ in range(int(seconds / 0.05)):
        clock.now += 0.05
        engine.tick(clock.now, 0.05)


def shown(engine: InterlockEngine) -> list[str]:
    return [e.key for e in engine.alarms.by_severity()]


def test_a_dead_elevator_gives_one_alarm_naming_the_interlocks_it_holds() -> None:
    clock, image, engine = site()
    run(clock, engine, 1.0)
    assert shown(engine) == []
    image.mark_device("lift", Quality.OFFLINE)
    run(clock, engine, 10.0)
    assert shown(engine) == ["comm-loss/lift"]
    alarm = engine.alarms.active["comm-loss/lift"]
    assert alarm.message.startswith("lift not answering (unit 3 on rs485-1)")
    assert "elevator-safety-lift" in alarm.message  # holding its out-of-service demand
    suppressed = {k: e for k, e in engine.alarms.active.items() if e.suppressed_by}
    assert "elevator-safety-lift/unavailable" in suppressed
    assert all(e.suppressed_by == "comm-loss/lift" for e in suppressed.values())
    assert not any(k.endswith("/critical") for k in engine.alarms.active)  # no false fault
    assert engine.actuator.wanted("lift", "req_out_of_service") == 1  # still fails safe
    image.update("lift", "car_status", 1)  # it answers again
    healthy(image)
    run(clock, engine, 1.0)
    assert "comm-loss/lift" not in engine.alarms.active
    assert not any(k.startswith("elevator-safety-lift") for k in engine.alarms.active)


def test_a_silent_bus_gives_one_bus_alarm_over_its_devices() -> None:
    clock, image, engine = site()
    run(clock, engine, 1.0)
    image.mark_device("lift", Quality.OFFLINE)
    image.mark_device("lockers", Quality.OFFLINE)
    run(clock, engine, 10.0)
    assert shown(engine) == ["bus-down/rs485-1"]
    assert engine.alarms.active["comm-loss/lift"].suppressed_by == "bus-down/rs485-1"
    assert engine.alarms.active["comm-loss/lockers"].suppressed_by == "bus-down/rs485-1"
    image.update("lockers", "locker_count", 16)  # one device answers: the bus is not down
    run(clock, engine, 0.1)
    assert shown(engine) == ["comm-loss/lift"]


def test_a_lost_fire_input_says_so_once_and_holds_every_fail_safe_action() -> None:
    clock, image, engine = site()
    run(clock, engine, 1.0)
    image.mark_device("sio", Quality.OFFLINE)
    run(clock, engine, 10.0)
    assert shown(engine) == ["comm-loss/sio"]
    unavailable = engine.alarms.active["fire-alarm/unavailable"]
    assert unavailable.message.startswith("fire-alarm input not available: sio offline since")
    assert "chargers held at 0 A and locked" in unavailable.message
    assert "fire-alarm/critical" not in engine.alarms.active
    assert engine.actuator.wanted("charger-1", "max_current") == 0


def test_a_charger_that_locks_out_says_which_fault() -> None:
    clock, image, engine = site()
    image.update("charger-1", "residual_current_status", 2)
    run(clock, engine, 0.1)
    assert engine.alarms.active["lockout-charger-1/major"].message == (
        "charger-1 locked out: residual current"
    )

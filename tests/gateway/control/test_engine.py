"""The interlock engine and actuator over arbitrary input sequences, timings and staleness."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from gateway.control.actuator import Actuator, PlannedWrite
from gateway.control.alarms import AlarmEvent, AlarmLog, Severity
from gateway.control.conditions import Truth
from gateway.control.engine import InterlockEngine
from gateway.control.rules import Interlock
from gateway.devices.profile import Profile, load_profile
from gateway.errors import InterlockError
from gateway.image import ProcessImage, Quality

CHARGERS = ("charger-1", "charger-2")
PROFILES: dict[str, Profile] = {
    "sio": load_profile("SIO-1"),
    **{c: load_profile("EVSE-HEC") for c in CHARGERS},
}
INPUTS = [
    ("sio", "fire_alarm_loop"),
    *[(c, p) for c in CHARGERS for p in ("residual_current_status", "cp_state", "max_current")],
    *[(c, p) for c in CHARGERS for p in ("remote_lock",)],
]


def interlocks() -> list[Interlock]:
    fire = {
        "name": "fire",
        "when": {"point": "sio.fire_alarm_loop", "eq": False},
        "actions": [
            {"alarm": "critical", "message": "fire alarm"},
            *[
                {"write": f"{c}.max_current", "value": 0, "priority": 1, "limit": True}
                for c in CHARGERS
            ],
            *[
                {
                    "write": f"{c}.remote_lock",
                    "value": "locked",
                    "priority": 1,
                    "release": "unlocked",
                }
                for c in CHARGERS
            ],
        ],
    }
    normal = {
        "name": "charging",
        "when": {"point": "charger-1.cp_state", "ne": "F"},
        "actions": [{"write": f"{c}.max_current", "value": 16, "priority": 8} for c in CHARGERS],
    }
    rcd = {
        "name": "rcd-lockout",
        "when": {"point": "charger-1.residual_current_status", "ne": "ok"},
        "latch": True,
        "reset_when": {"point": "charger-1.cp_state", "eq": "A"},
        "on_delay_s": 0.0,
        "actions": [
            {"alarm": "major", "message": "residual current: charger-1 locked out"},
            {"write": "charger-1.max_current", "value": 0, "priority": 3, "limit": True},
        ],
    }
    return [Interlock.model_validate(d) for d in (fire, normal, rcd)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def build(clock: Clock, state: Path | None) -> tuple[ProcessImage, Actuator, InterlockEngine]:
    image = ProcessImage(clock)
    for device, point in INPUTS:
        image.declare(device, point, stale_after_s=1.0)
    actuator = Actuator(image)
    engine = InterlockEngine(interlocks(), PROFILES, image, actuator, AlarmLog(), state)
    return image, actuator, engine


VALUES = {
    "fire_alarm_loop": st.booleans(),
    "residual_current_status": st.integers(0, 3),
    "cp_state": st.integers(0, 5),
    "max_current": st.sampled_from([0.0, 6.0, 16.0, 32.0]),
    "remote_lock": st.integers(0, 1),
}


class InterlockMachine(RuleBasedStateMachine):
    """Drive inputs, time, staleness, resets and restarts; check what would be written."""

    @initialize(tmp=st.just(None))
    def start(self, tmp: None) -> None:
        import tempfile

        self.dir = Path(tempfile.mkdtemp())
        self.clock = Clock()
        self.image, self.actuator, self.engine = build(self.clock, self.dir / "latches.json")
        self.events: list[AlarmEvent] = []
        self.engine.alarms.listeners.append(self.events.append)
        self.writes: list[PlannedWrite] = []
        self.fire_seen = False
        self.restarted_at: float | None = None

    @rule(
        index=st.integers(0, len(INPUTS) - 1),
        data=st.data(),
    )
    def set_input(self, index: int, data: st.DataObject) -> None:
        device, point = INPUTS[index]
        self.image.update(device, point, data.draw(VALUES[point]))

    @rule(index=st.integers(0, len(INPUTS) - 1), quality=st.sampled_from(list(Quality)[2:]))
    def lose_input(self, index: int, quality: Quality) -> None:
        self.image.mark(*INPUTS[index], quality)

    @rule(seconds=st.sampled_from([0.05, 0.2, 1.5]))
    def tick(self, seconds: float) -> None:
        self.clock.now += seconds
        latched_before = self.engine.rules["rcd-lockout"].latched
        seen = len(self.events)
        self.engine.tick(self.clock.now, seconds)
        if latched_before:
            assert self.engine.rules["rcd-lockout"].latched, "a latch cleared without a reset"
        for event in self.events[seen:]:
            if event.kind == "raised" and not event.key.endswith("/unavailable"):
                truth = self.engine.rules[event.interlock].truth
                assert truth is Truth.TRUE, f"{event.key} raised while its condition is {truth}"
        fire = self.engine.rules["fire"]
        if fire.truth is Truth.UNKNOWN:
            assert fire.active, "an unknown fire input must hold the fail-safe actions"
            waited = self.clock.now - (fire.unknown_since or self.clock.now)
            if waited >= fire.spec.unknown_alarm_delay_s and fire.alarmed != "condition":
                assert "fire/unavailable" in self.engine.alarms.active
        planned = self.actuator.plan(self.clock.now, seconds)
        for w in planned:
            self.actuator.sent(w, self.clock.now)
        self.writes = planned

    @rule()
    def reset(self) -> None:
        rule_ = self.engine.rules["rcd-lockout"]
        was_latched = rule_.latched
        try:
            self.engine.reset("rcd-lockout", by="test")
        except InterlockError:
            assert rule_.latched == was_latched, "a refused reset changed the latch"
        else:
            assert was_latched
            assert not rule_.latched

    @rule()
    def restart(self) -> None:
        latched = self.engine.rules["rcd-lockout"].latched
        self.image, self.actuator, self.engine = build(self.clock, self.dir / "latches.json")
        self.engine.alarms.listeners.append(self.events.append)
        assert self.engine.rules["rcd-lockout"].latched == latched, "latch lost in a restart"
        assert self.actuator.plan(self.clock.now, 0.05) == [], "wrote before reading back"

    @invariant()
    def no_current_while_fire_is_active(self) -> None:
        if not getattr(self, "engine", None) or not self.engine.rules["fire"].active:
            return
        for w in self.writes:
            if w.point == "max_current":
                assert w.value == 0, w
            if w.point == "remote_lock":
                assert w.value == 0, w  # locked

    @invariant()
    def no_current_while_locked_out(self) -> None:
        if not getattr(self, "engine", None) or not self.engine.rules["rcd-lockout"].latched:
            return
        assert self.actuator.wanted("charger-1", "max_current") == 0


TestInterlockMachine = InterlockMachine.TestCase
TestInterlockMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_a_stale_input_holds_the_actions_but_says_input_not_available_not_fire() -> None:
    clock = Clock()
    image, actuator, engine = build(clock, None)
    image.update("sio", "fire_alarm_loop", True)
    engine.tick(clock.now, 0.05)
    assert not engine.rules["fire"].active
    clock.now += 2.0  # older than its staleness limit
    engine.tick(clock.now, 0.05)
    assert engine.rules["fire"].active  # fail safe: the actions stand
    assert actuator.wanted("charger-1", "max_current") == 0
    assert "fire/critical" not in engine.alarms.active  # but nobody is told there is a fire
    assert "fire/unavailable" not in engine.alarms.active  # the alarm waits for a root cause
    clock.now += 5.0
    engine.tick(clock.now, 0.05)
    alarm = engine.alarms.active["fire/unavailable"]
    assert alarm.severity is Severity.MAJOR
    assert alarm.message.startswith("fire input not available: sio stale (fire_alarm_loop)")
    assert alarm.message.count("fire_alarm_loop") == 1
    image.update("sio", "fire_alarm_loop", True)  # read again: healthy
    engine.tick(clock.now, 0.05)
    assert "fire/unavailable" not in engine.alarms.active
    image.update("sio", "fire_alarm_loop", False)  # and now a real fire
    engine.tick(clock.now, 0.05)
    assert engine.alarms.active["fire/critical"].severity is Severity.CRITICAL


def test_latched_lockout_resets_only_after_the_fault_clears_and_the_car_leaves() -> None:
    clock = Clock()
    image, _actuator, engine = build(clock, None)
    image.update("charger-1", "cp_state", 2)  # C: charging
    image.update("charger-1", "residual_current_status", 2)  # ac trip
    engine.tick(clock.now, 0.05)
    assert engine.rules["rcd-lockout"].latched
    with pytest.raises(InterlockError, match="fault is still present"):
        engine.reset("rcd-lockout", by="technician")
    image.update("charger-1", "residual_current_status", 0)
    engine.tick(clock.now, 0.05)
    with pytest.raises(InterlockError, match=r"charger-1\.cp_state is C, expected A"):
        engine.reset("rcd-lockout", by="technician")
    image.update("charger-1", "cp_state", 0)  # A: unplugged
    engine.reset("rcd-lockout", by="technician")
    assert "rcd-lockout/major" not in engine.alarms.active
    assert engine.alarms.recent[-1].by == "technician"


def test_decreases_are_written_before_increases() -> None:
    clock = Clock()
    image, actuator, _engine = build(clock, None)
    for c in CHARGERS:
        image.update(c, "max_current", 16.0)
        image.update(c, "remote_lock", 1)
    actuator.demand("x", "charger-1", "max_current", 32.0, 8, limit=False)
    actuator.demand("x", "charger-2", "max_current", 6.0, 8, limit=False)
    planned = actuator.plan(clock.now, 0.05)
    assert [(w.device, w.value) for w in planned] == [("charger-2", 6.0), ("charger-1", 32.0)]


def test_unknown_interlock_reset_names_the_known_ones() -> None:
    _, _, engine = build(Clock(), None)
    with pytest.raises(InterlockError, match=r"no interlock 'smoke'.*fire, charging"):
        engine.reset("smoke", by="x")


def _latched_lockout(
    clock: Clock, state: Path, *, write_behind: bool
) -> tuple[ProcessImage, InterlockEngine]:
    image = ProcessImage(clock)
    for device, point in INPUTS:
        image.declare(device, point, stale_after_s=1.0)
    engine = InterlockEngine(
        interlocks(), PROFILES, image, Actuator(image), AlarmLog(), state,
        write_behind=write_behind,
    )  # fmt: skip
    for device, point in INPUTS:
        image.update(device, point, 1 if point != "fire_alarm_loop" else True)
    image.update("charger-1", "residual_current_status", 2)  # tripped
    engine.tick(clock.now, 0.05)
    clock.now += 0.1
    engine.tick(clock.now, 0.05)
    return image, engine


def test_a_latch_written_behind_the_control_loop_survives_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    state = tmp_path / "latches.json"
    _, engine = _latched_lockout(clock, state, write_behind=True)
    assert engine.rules["rcd-lockout"].latched
    engine.close()  # what `gateway run` does at a stop: the last state on disk
    assert oct(state.stat().st_mode & 0o777) == "0o600"
    _, _, again = build(clock, state)
    assert again.rules["rcd-lockout"].latched, "the lockout was forgotten in a restart"


def test_a_latch_that_cannot_be_saved_is_said_and_still_holds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    state = tmp_path / "gone" / "latches.json"  # its directory does not exist: writes fail
    _, engine = _latched_lockout(clock, state, write_behind=True)
    engine.close()
    assert engine.rules["rcd-lockout"].latched
    said = [r.getMessage() for r in caplog.records if "not saved" in r.getMessage()]
    assert said
    assert said[0].startswith(f"latched interlocks not saved to {state}:")

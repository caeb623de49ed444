"""The standard fire interlock (I1) and lockout (I5) against everything else that demands
setpoints: arbitrary inputs, staleness, controller demands, resets and restarts."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from gateway.control.actuator import PRIORITY_CONTROL, Actuator, PlannedWrite
from gateway.control.alarms import AlarmLog
from gateway.control.engine import InterlockEngine
from gateway.control.standard.interlocks import FireAlarm, Safety, Scope, build
from gateway.devices.profile import Profile, load_profile
from gateway.errors import InterlockError
from gateway.image import ProcessImage, Quality

CHARGERS = ("charger-1", "charger-2", "charger-3")
PROFILES: dict[str, Profile] = {
    "sio": load_profile("SIO-1"),
    "pv": load_profile("SUNSPEC-INV"),
    "lift": load_profile("ELV-24476"),
    **{c: load_profile("EVSE-HEC") for c in CHARGERS},
}
INPUTS: dict[tuple[str, str], st.SearchStrategy[object]] = {
    ("sio", "fire_alarm_loop"): st.booleans(),
    ("pv", "wmaxlimpct"): st.sampled_from([1.0, 40.0, 100.0]),
    ("pv", "conn"): st.integers(0, 1),
    ("lift", "req_fire_recall"): st.integers(0, 1),
    ("lift", "fire_recall_feedback"): st.integers(0, 2),
    **{(c, "max_current"): st.sampled_from([0.0, 6.0, 16.0]) for c in CHARGERS},
    **{(c, "remote_lock"): st.integers(0, 1) for c in CHARGERS},
    **{(c, "residual_current_status"): st.integers(0, 3) for c in CHARGERS},
    **{(c, "contactor"): st.integers(0, 2) for c in CHARGERS},
    **{(c, "lockout_latched"): st.integers(0, 1) for c in CHARGERS},
}
KEYS = sorted(INPUTS)
HEALTHY: dict[tuple[str, str], object] = {
    ("sio", "fire_alarm_loop"): True,
    ("pv", "wmaxlimpct"): 100.0,
    ("pv", "conn"): 1,
    ("lift", "req_fire_recall"): 0,
    ("lift", "fire_recall_feedback"): 0,
    **{(c, "max_current"): 16.0 for c in CHARGERS},
    **{(c, "remote_lock"): 1 for c in CHARGERS},
    **{(c, "residual_current_status"): 0 for c in CHARGERS},
    **{(c, "contactor"): 0 for c in CHARGERS},
    **{(c, "lockout_latched"): 0 for c in CHARGERS},
}
SAFETY = Safety(fire_alarm=FireAlarm(recall_timeout_s=5), charger_lockout=Scope())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class StandardInterlockMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.state_file = Path(tempfile.mkdtemp()) / "latches.json"
        self.clock = Clock()
        self._build()
        self.planned: list[PlannedWrite] = []
        for key, value in HEALTHY.items():  # a site that runs normally until something happens
            self.image.update(*key, value)

    def _build(self) -> None:
        self.image = ProcessImage(self.clock)
        for device, point in KEYS:
            self.image.declare(device, point, stale_after_s=1.0)
        self.actuator = Actuator(self.image)
        self.engine = InterlockEngine(
            build(SAFETY, PROFILES),
            PROFILES,
            self.image,
            self.actuator,
            AlarmLog(),
            self.state_file,
        )

    @rule(index=st.integers(0, len(KEYS) - 1), data=st.data())
    def set_input(self, index: int, data: st.DataObject) -> None:
        key = KEYS[index]
        self.image.update(*key, data.draw(INPUTS[key]))

    @rule(index=st.integers(0, len(KEYS) - 1))
    def lose_input(self, index: int) -> None:
        self.image.mark(*KEYS[index], Quality.OFFLINE)

    @rule(charger=st.sampled_from(CHARGERS), amps=st.sampled_from([0.0, 6.0, 10.0, 32.0]))
    def allocation_demand(self, charger: str, amps: float) -> None:
        self.actuator.demand(
            "feeder-limit", charger, "max_current", amps, PRIORITY_CONTROL, limit=True
        )

    @rule(pct=st.sampled_from([1.0, 50.0, 100.0]))
    def curtailment_demand(self, pct: float) -> None:
        self.actuator.demand("export-limit", "pv", "wmaxlimpct", pct, PRIORITY_CONTROL, limit=True)

    @rule(seconds=st.sampled_from([0.05, 0.5, 3.0]))
    def tick(self, seconds: float) -> None:
        self.clock.now += seconds
        latched = {n for n, r in self.engine.rules.items() if r.latched}
        self.engine.tick(self.clock.now, seconds)
        still = {n for n, r in self.engine.rules.items() if r.latched}
        assert latched <= still, f"cleared without a reset: {latched - still}"
        self.planned = self.actuator.plan(self.clock.now, seconds)
        for w in self.planned:
            self.actuator.sent(w, self.clock.now)

    @rule(charger=st.sampled_from(CHARGERS))
    def reset(self, charger: str) -> None:
        with contextlib.suppress(InterlockError):
            self.engine.reset(f"lockout-{charger}", by="test")

    @rule()
    def restart(self) -> None:
        latched = {n for n, r in self.engine.rules.items() if r.latched}
        self._build()
        assert {n for n, r in self.engine.rules.items() if r.latched} == latched
        self.planned = self.actuator.plan(self.clock.now, 0.05)
        assert self.planned == [], "a write before the device state was read back"

    @invariant()
    def fire_stops_chargers_and_never_raises_pv(self) -> None:
        if not hasattr(self, "engine") or not self.engine.rules["fire-alarm"].active:
            return
        for w in self.planned:
            if w.point == "max_current":
                assert w.value == 0, w
            if w.point == "wmaxlimpct":
                assert w.value == 0, w
            if w.point == "remote_lock":
                assert w.value == 0, w  # locked
            if w.point == "req_fire_recall":
                assert w.value == 1, w
        for out in ("charger_feeder_enable", "pv_rsd_keepalive"):
            assert self.actuator.wanted("sio", out) == 0

    @invariant()
    def locked_out_chargers_get_no_current(self) -> None:
        if not hasattr(self, "engine"):
            return
        for c in CHARGERS:
            if self.engine.rules[f"lockout-{c}"].latched:
                assert self.actuator.wanted(c, "max_current") == 0


TestStandardInterlocks = StandardInterlockMachine.TestCase
TestStandardInterlocks.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)

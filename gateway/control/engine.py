"""The interlock engine: conditions in, demands and alarms out, once per control cycle.

Each interlock is a small state machine over its condition's truth:

    idle --(true or UNKNOWN for on_delay)--> active --(false for off_delay)--> idle
    active (latching) --(reset, accepted only while false and reset_when holds)--> idle

While active its write actions are demands on the actuator and its alarms are raised; when it
stands down they are withdrawn and cleared. A latched interlock survives a gateway restart
(its latch is kept in the state file), and comes back holding its demands — but nothing is
written to a device before its state has been read back (the actuator's rule), and no
momentary command is ever replayed: interlocks only hold levels.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.control.actuator import Actuator
from gateway.control.alarms import AlarmLog
from gateway.control.conditions import Node, Truth, compile_condition, evaluate
from gateway.control.rules import (
    AlarmAction,
    InhibitAction,
    Interlock,
    WriteAction,
    compares,
    split_ref,
)
from gateway.devices.codec import Value
from gateway.devices.profile import Profile
from gateway.errors import InterlockError
from gateway.image import ProcessImage

log = logging.getLogger(__name__)


class Controller(Protocol):
    """A standard interlock that computes its demands (allocation, curtailment, …)."""

    name: str

    def tick(self, now: float, dt: float) -> None: ...


@dataclass
class InterlockStatus:
    name: str
    active: bool
    latched: bool
    truth: Truth


class RuleRuntime:
    """One declared interlock and its timers."""

    def __init__(self, spec: Interlock, profiles: dict[str, Profile]) -> None:
        self.spec = spec
        self.name = spec.name
        self.node: Node = compile_condition(spec.when, profiles)
        self.reset_node: Node | None = (
            compile_condition(spec.reset_when, profiles) if spec.reset_when else None
        )
        self.active = False
        self.latched = False
        self.truth = Truth.FALSE
        self._since: float | None = None  # start of the current run of the opposite truth
        self.armed_at = 0.0  # before this, UNKNOWN inputs (not read yet) hold the state
        self.device = split_ref(compares(spec.when)[0].point)[0]
        self.inputs = sorted({c.point for c in compares(spec.when)})

    def step(self, now: float, image: ProcessImage) -> bool | None:
        """Advance the timers; return True on activation, False on release, else None."""
        result = evaluate(self.node, image)
        self.truth = result.truth
        self.untrusted = result.untrusted
        if result.truth is Truth.UNKNOWN and now < self.armed_at:
            return None  # inputs not read yet since start: no alarm burst at every start
        tripped = result.truth is not Truth.FALSE  # UNKNOWN counts as tripped
        if self.active and self.spec.latch and result.truth is Truth.TRUE:
            self.latched = True  # a latch records a known fault, not a lost input
        if tripped == self.active:
            self._since = None
            return None
        if self.active and self.latched:
            return None  # only a reset stands a latched interlock down
        if self._since is None:
            self._since = now
        delay = self.spec.on_delay_s if tripped else self.spec.off_delay_s
        if now - self._since < delay:
            return None
        self._since = None
        self.active = tripped
        self.latched = tripped and self.spec.latch and result.truth is Truth.TRUE
        return tripped

    def can_reset(self, image: ProcessImage) -> str | None:
        """Why a reset is refused now, or None if it is accepted."""
        if not self.latched:
            return f"interlock {self.name!r} is not latched"
        inputs = self.describe_inputs(image)
        if evaluate(self.node, image).truth is not Truth.FALSE:
            return f"interlock {self.name!r}: the fault is still present ({inputs})"
        if self.reset_node and evaluate(self.reset_node, image).truth is not Truth.TRUE:
            return f"interlock {self.name!r}: the reset condition is not met ({inputs})"
        return None

    def describe_inputs(self, image: ProcessImage) -> str:
        parts = []
        for ref in self.inputs:
            s = image.find(*split_ref(ref))
            parts.append(f"{ref}={s.value!r} {s.quality.value}" if s else f"{ref} not read yet")
        return ", ".join(parts)


class InterlockEngine:
    """Every interlock of a site, evaluated in order each control cycle."""

    def __init__(
        self,
        interlocks: Sequence[Interlock],
        profiles: dict[str, Profile],
        image: ProcessImage,
        actuator: Actuator,
        alarms: AlarmLog,
        state_file: Path | None = None,
    ) -> None:
        self.image = image
        self.actuator = actuator
        self.alarms = alarms
        self.rules = {spec.name: RuleRuntime(spec, profiles) for spec in interlocks}
        self.controllers: list[Controller] = []
        self.state_file = state_file
        self._values: dict[tuple[str, int], Value] = {}
        for rule in self.rules.values():
            for i, action in enumerate(rule.spec.actions):
                if isinstance(action, WriteAction):
                    device, point = split_ref(action.write)
                    profile = profiles[device]
                    self._values[(rule.name, i)] = _as_stored(profile, point, action.value)
                    release = _as_stored(profile, point, action.release)
                    actuator.target(device, point, release=release, ramp_per_s=action.ramp_per_s)
        self._restore()

    def inputs(self) -> set[tuple[str, str]]:
        """Every (device, point) a declared interlock reads."""
        refs = set()
        for rule in self.rules.values():
            refs |= {split_ref(ref) for ref in rule.inputs}
        return refs

    def arm(self, at: float) -> None:
        """Let inputs not read since start count as tripped only from ``at`` on."""
        for rule in self.rules.values():
            rule.armed_at = at

    def tick(self, now: float, dt: float) -> None:
        latches_before = [r.latched for r in self.rules.values()]
        for rule in self.rules.values():
            change = rule.step(now, self.image)
            if change is True:
                self._activate(rule)
            elif change is False:
                self._release(rule, by=None)
        if [r.latched for r in self.rules.values()] != latches_before:
            self._save()
        for controller in self.controllers:
            controller.tick(now, dt)

    def reset(self, name: str, by: str) -> None:
        """An authorised reset of a latched interlock; refused while the fault is present."""
        rule = self.rules.get(name)
        if rule is None:
            raise InterlockError(f"no interlock {name!r} (interlocks: {', '.join(self.rules)})")
        refusal = rule.can_reset(self.image)
        if refusal:
            raise InterlockError(refusal)
        rule.active = rule.latched = False
        self._release(rule, by=by)
        log.warning("interlock %s reset by %s", name, by)

    def status(self) -> list[InterlockStatus]:
        return [InterlockStatus(r.name, r.active, r.latched, r.truth) for r in self.rules.values()]

    # -- actions ----------------------------------------------------------------------------

    def _activate(self, rule: RuleRuntime) -> None:
        log.warning("interlock %s active (%s)", rule.name, rule.describe_inputs(self.image))
        self._demand(rule)
        for action in rule.spec.actions:
            if isinstance(action, AlarmAction):
                self._raise(rule, action)
            elif isinstance(action, InhibitAction):
                self.actuator.inhibit(rule.name, action.inhibit)
        self._save()

    def _demand(self, rule: RuleRuntime) -> None:
        for i, action in enumerate(rule.spec.actions):
            if isinstance(action, WriteAction):
                device, point = split_ref(action.write)
                value = self._values[(rule.name, i)]
                self.actuator.demand(
                    rule.name, device, point, value, action.priority, limit=action.limit
                )

    def _release(self, rule: RuleRuntime, by: str | None) -> None:
        for action in rule.spec.actions:
            if isinstance(action, WriteAction):
                self.actuator.withdraw(rule.name, *split_ref(action.write))
            elif isinstance(action, AlarmAction):
                self.alarms.clear(_alarm_key(rule.name, action), by=by)
            elif isinstance(action, InhibitAction):
                self.actuator.allow(rule.name, action.inhibit)
        self._save()

    def _raise(self, rule: RuleRuntime, action: AlarmAction) -> None:
        values = {ref: self.image.reading(*split_ref(ref)) for ref in rule.inputs}
        message = action.message
        if rule.truth is Truth.UNKNOWN:
            message += f" (inputs not trusted: {', '.join(rule.untrusted)})"
        self.alarms.raise_(
            _alarm_key(rule.name, action),
            action.alarm,
            rule.name,
            message,
            device=rule.device,
            values=values,
        )

    # -- latches across restarts ------------------------------------------------------------

    def _save(self) -> None:
        if self.state_file is None:
            return
        latched = sorted(r.name for r in self.rules.values() if r.latched)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"latched": latched}))
        os.replace(tmp, self.state_file)

    def _restore(self) -> None:
        if self.state_file is None or not self.state_file.exists():
            return
        for name in json.loads(self.state_file.read_text()).get("latched", []):
            rule = self.rules.get(name)
            if rule is not None and rule.spec.latch:
                rule.active = rule.latched = True
                self._demand(rule)
                log.warning("interlock %s: still latched from before the restart", name)


def _alarm_key(interlock: str, action: AlarmAction) -> str:
    return f"{interlock}/{action.alarm.value}"


def _as_stored(profile: Profile, point: str, value: Value) -> Value:
    """An enum label in a config as the code the device stores (``"locked"`` → 0)."""
    enum = profile.point(point).enum
    if isinstance(value, str) and enum:
        return next(code for code, label in enum.items() if label == value)
    return value

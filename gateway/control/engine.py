"""The interlock engine: conditions in, demands and alarms out, once per control cycle.

Each interlock is a small state machine over its condition's truth:

    idle --(true or UNKNOWN for on_delay)--> active --(false for off_delay)--> idle
    active (latching) --(reset, accepted only while false and reset_when holds)--> idle

While active its write actions are demands on the actuator; when it stands down they are
withdrawn. Its alarms tell a person what is true: while its condition is known true they are
raised (naming which fault, from the comparisons' ``says``); while it is active only because
its condition is *unknown* (an input stale, bad or offline) it raises one "input not
available" alarm of its own instead, naming the root cause once, at the interlock's
``unknown_severity`` — suppressed under the device's comm-loss alarm when that device being
offline is the only reason. When the input comes back false that alarm clears at once and
the actions stand down through the off-delay. A latched interlock survives a gateway restart
(its latch is kept in the state file), and comes back holding its demands — but nothing is
written to a device before its state has been read back (the actuator's rule), and no
momentary command is ever replayed: interlocks only hold levels.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from gateway.control.actuator import Actuator
from gateway.control.alarms import AlarmLog
from gateway.control.conditions import Node, Truth, Untrusted, compile_condition, evaluate
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
from gateway.image import ProcessImage, Quality
from gateway.priority import background_executor
from gateway.state_files import write_atomic

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
        self.untrusted: list[Untrusted] = []
        self.found: list[str] = []  # what the true comparisons say (which fault)
        self.unknown_since: float | None = None  # start of the current run of UNKNOWN
        #: Which of its alarms stands: its own (condition known true), "input not available"
        #: (condition unknown), or none.
        self.alarmed: Literal["", "condition", "unavailable"] = ""
        self._since: float | None = None  # start of the current run of the opposite truth
        self.armed_at = 0.0  # before this, UNKNOWN inputs (not read yet) hold the state
        self.device = split_ref(compares(spec.when)[0].point)[0]
        self.inputs = sorted({c.point for c in compares(spec.when)})

    def step(self, now: float, image: ProcessImage) -> bool | None:
        """Advance the timers; return True on activation, False on release, else None."""
        result = evaluate(self.node, image)
        self.truth = result.truth
        self.untrusted = result.untrusted
        self.found = result.found
        if result.truth is not Truth.UNKNOWN:
            self.unknown_since = None
        elif self.unknown_since is None:
            self.unknown_since = now
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
        """Why a reset is refused now (the exact part of the condition that is not met, and
        what to do), or None if it is accepted."""
        if not self.latched:
            return f"interlock {self.name!r} is not latched"
        if evaluate(self.node, image).truth is not Truth.FALSE:
            unmet = "; ".join(self.node.unmet(image, Truth.FALSE))
            return f"interlock {self.name!r}: the fault is still present ({unmet})"
        if self.reset_node and evaluate(self.reset_node, image).truth is not Truth.TRUE:
            unmet = "; ".join(self.reset_node.unmet(image, Truth.TRUE))
            hint = f": {self.spec.reset_hint}" if self.spec.reset_hint else ""
            return f"interlock {self.name!r}: {unmet}{hint}"
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
        *,
        write_behind: bool = False,
    ) -> None:
        self.image = image
        self.actuator = actuator
        self.alarms = alarms
        self.rules = {spec.name: RuleRuntime(spec, profiles) for spec in interlocks}
        self.controllers: list[Controller] = []
        self.state_file = state_file
        # ``gateway run``: the latches are written (fsync'd) by a thread of their own, in
        # order; the control loop that latches an interlock must not wait for the SD card
        self._writer = background_executor(1, "latches") if write_behind and state_file else None
        self._written: Future[None] | None = None
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
        first = [c for c in self.controllers if getattr(c, "before_rules", False)]
        for controller in first:
            controller.tick(now, dt)
        for rule in self.rules.values():
            change = rule.step(now, self.image)
            if change is True:
                self._activate(rule)
            elif change is False:
                self._release(rule, by=None)
            if rule.active:
                self._alarm(rule, now)
        if [r.latched for r in self.rules.values()] != latches_before:
            self._save()
        for controller in self.controllers:
            if controller not in first:
                controller.tick(now, dt)
        self.alarms.tick()

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

    def replace(
        self, new: dict[str, RuleRuntime], profiles: dict[str, Profile], *, arm_new_at: float
    ) -> None:
        """A new set of interlocks (compiled beforehand: ``RuleRuntime(spec, profiles)`` each),
        between two cycles (a configuration applied in place).

        An interlock that still exists (same name) keeps its state — active, latched, its
        timers and alarms — and holds its new actions at once if it is active; a removed one
        stands down: its demands are withdrawn to their release values, its alarms cleared
        (``by="configuration"``); a new one treats inputs not read yet as a start does, until
        ``arm_new_at``."""
        old = self.rules
        for name, rule in old.items():
            if name not in new:
                self._release(rule, by="configuration", save=False)
            elif rule.active:  # its old actions go, its new ones come below
                for action in rule.spec.actions:
                    if isinstance(action, WriteAction):
                        self.actuator.withdraw(name, *split_ref(action.write))
                    elif isinstance(action, InhibitAction):
                        self.actuator.allow(name, action.inhibit)
        self._values = {key: v for key, v in self._values.items() if key[0] not in old}
        for name, rule in new.items():
            for i, action in enumerate(rule.spec.actions):
                if isinstance(action, WriteAction):
                    device, point = split_ref(action.write)
                    self._values[(name, i)] = _as_stored(profiles[device], point, action.value)
                    release = _as_stored(profiles[device], point, action.release)
                    self.actuator.target(
                        device, point, release=release, ramp_per_s=action.ramp_per_s
                    )
            before = old.get(name)
            if before is None:
                rule.armed_at = arm_new_at
                continue
            rule.active, rule.truth, rule.alarmed = before.active, before.truth, before.alarmed
            rule.latched = before.latched and rule.spec.latch
            rule.unknown_since, rule.armed_at = before.unknown_since, before.armed_at
            rule._since = before._since
            if rule.active:
                self._demand(rule)
                for action in rule.spec.actions:
                    if isinstance(action, InhibitAction):
                        self.actuator.inhibit(name, action.inhibit)
        self.rules = new
        self._save()

    def status(self) -> list[InterlockStatus]:
        return [InterlockStatus(r.name, r.active, r.latched, r.truth) for r in self.rules.values()]

    # -- actions ----------------------------------------------------------------------------

    def _activate(self, rule: RuleRuntime) -> None:
        log.warning("interlock %s active (%s)", rule.name, rule.describe_inputs(self.image))
        self._demand(rule)
        for action in rule.spec.actions:
            if isinstance(action, InhibitAction):
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

    def _release(self, rule: RuleRuntime, by: str | None, *, save: bool = True) -> None:
        for action in rule.spec.actions:
            if isinstance(action, WriteAction):
                self.actuator.withdraw(rule.name, *split_ref(action.write))
            elif isinstance(action, AlarmAction):
                self.alarms.clear(_alarm_key(rule.name, action), by=by)
            elif isinstance(action, InhibitAction):
                self.actuator.allow(rule.name, action.inhibit)
        self.alarms.clear(_unavailable_key(rule.name), by=by)
        rule.alarmed = ""
        if save:
            self._save()

    # -- alarms -------------------------------------------------------------------------------

    def _alarm(self, rule: RuleRuntime, now: float) -> None:
        """Bring an active interlock's alarms in line with what is known (each cycle)."""
        if rule.truth is Truth.TRUE and rule.alarmed != "condition":
            self.alarms.clear(_unavailable_key(rule.name))
            for action in rule.spec.actions:
                if isinstance(action, AlarmAction):
                    self._raise(rule, action)
            rule.alarmed = "condition"
        elif rule.truth is Truth.UNKNOWN and rule.alarmed != "condition":
            assert rule.unknown_since is not None
            if now - rule.unknown_since >= rule.spec.unknown_alarm_delay_s:
                self._unavailable(rule)
        elif rule.truth is Truth.FALSE and rule.alarmed == "unavailable":
            self.alarms.clear(_unavailable_key(rule.name))  # the actions stand down later
            rule.alarmed = ""

    def _raise(self, rule: RuleRuntime, action: AlarmAction) -> None:
        values = {ref: self.image.reading(*split_ref(ref)) for ref in rule.inputs}
        message = action.message
        if rule.found:
            message += f": {', '.join(dict.fromkeys(rule.found))}"
        self.alarms.raise_(
            _alarm_key(rule.name, action),
            action.alarm,
            rule.name,
            message,
            device=rule.device,
            values=values,
        )

    def _unavailable(self, rule: RuleRuntime) -> None:
        """Raise (or bring up to date) the one "input not available" alarm of ``rule``."""
        causes, offline = _root_causes(rule.untrusted, self.image)
        precaution = rule.spec.precaution or _default_precaution(rule)
        message = f"{rule.name} input not available: {causes}; {precaution} as a precaution"
        parents = [f"comm-loss/{d}" for d in offline]
        only_offline = offline and len(offline) == len({u.device for u in rule.untrusted})
        suppressed_by = next((k for k in parents if only_offline and k in self.alarms.active), None)
        key = _unavailable_key(rule.name)
        if rule.alarmed == "unavailable":
            standing = self.alarms.active.get(key)
            if (
                suppressed_by is None
                and standing is not None
                and standing.suppressed_by is not None
                and all(u.quality is Quality.OFFLINE for u in rule.untrusted)
            ):
                return  # its device answers again, these inputs are not read yet: the cause
                # is the same, and the alarm clears with the next read, under its cause
            self.alarms.update(key, message=message, suppressed_by=suppressed_by)
            return
        self.alarms.raise_(
            key,
            rule.spec.unknown_severity,
            rule.name,
            message,
            device=rule.device,
            suppressed_by=suppressed_by,
        )
        rule.alarmed = "unavailable"

    def holding_for(self, device: str) -> list[str]:
        """The interlocks holding their fail-safe actions only because ``device`` is not
        read (active, condition unknown, every untrusted input on that device)."""
        return [
            r.name
            for r in self.rules.values()
            if r.active and r.truth is Truth.UNKNOWN and {u.device for u in r.untrusted} == {device}
        ]

    # -- latches across restarts ------------------------------------------------------------

    def _save(self) -> None:
        if self.state_file is None:
            return
        latched = sorted(r.name for r in self.rules.values() if r.latched)
        data = json.dumps({"latched": latched}).encode()
        if self._writer is not None:
            self._written = self._writer.submit(_write_latches, self.state_file, data)
        else:
            _write_latches(self.state_file, data)

    def close(self) -> None:
        """The latches' last state on disk; the writer thread stopped (blocking: at a stop)."""
        if self._written is not None:
            self._written.result()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None

    def _restore(self) -> None:
        if self.state_file is None or not self.state_file.exists():
            return
        for name in json.loads(self.state_file.read_text()).get("latched", []):
            rule = self.rules.get(name)
            if rule is not None and rule.spec.latch:
                rule.active = rule.latched = True
                rule.alarmed = "condition"  # its alarm is still active in the journal
                self._demand(rule)
                log.warning("interlock %s: still latched from before the restart", name)


def _alarm_key(interlock: str, action: AlarmAction) -> str:
    return f"{interlock}/{action.alarm.value}"


def _unavailable_key(interlock: str) -> str:
    return f"{interlock}/unavailable"


def _root_causes(untrusted: list[Untrusted], image: ProcessImage) -> tuple[str, list[str]]:
    """Each device named once: ``sio offline since 14:02:11``, or its unreadable points with
    their state; and the devices that are offline (stopped answering)."""
    by_device: dict[str, list[Untrusted]] = {}
    for u in untrusted:
        by_device.setdefault(u.device, []).append(u)
    parts, offline = [], []
    for device, inputs in by_device.items():
        if image.offline(device):
            offline.append(device)
            parts.append(f"{device} offline{_since(inputs)}")
            continue
        states = dict.fromkeys(str(u).split(" ", 1)[1] for u in inputs)
        points = ", ".join(dict.fromkeys(u.point for u in inputs))
        parts.append(f"{device} {'/'.join(states)} ({points}){_since(inputs)}")
    return "; ".join(parts), offline


def _since(inputs: list[Untrusted]) -> str:
    """`` since 14:02:11`` (local time) from the oldest sample's monotonic time."""
    times = [u.since for u in inputs if u.since is not None]
    if not times:
        return ""
    wall = time.time() - (time.monotonic() - min(times))
    return f" since {time.strftime('%H:%M:%S', time.localtime(wall))}"


def _default_precaution(rule: RuleRuntime) -> str:
    devices = dict.fromkeys(
        split_ref(a.write)[0] for a in rule.spec.actions if isinstance(a, WriteAction)
    )
    if not devices:
        return "nothing is done about it"
    return f"its fail-safe demands on {', '.join(devices)} are held"


def _as_stored(profile: Profile, point: str, value: Value) -> Value:
    """An enum label in a config as the code the device stores (``"locked"`` → 0)."""
    enum = profile.point(point).enum
    if isinstance(value, str) and enum:
        return next(code for code, label in enum.items() if label == value)
    return value


def _write_latches(path: Path, data: bytes) -> None:
    """Replace the latches file whole (a power cut leaves the old or the new one)."""
    try:
        write_atomic(path, data)
    except OSError as exc:  # a full or failing disk: say so; the latch itself stands
        log.error("latched interlocks not saved to %s: %s", path, exc)

"""The rollout engine: who gets a release when, decided on evidence.

Pure decisions over a plain state, so the same code runs in the fleet's driver (state kept in
the database, one driver per rollout), in the property tests and in the benchmark. The
driver calls :meth:`Engine.report` for every OTA status a gateway sends, :meth:`Engine.tick`
on a timer with what it knows of each targeted gateway (online, interlocks, maintenance
window), and sends the :class:`Command` objects tick returns. Anchors: hawkBit's rollout groups
with success and error thresholds, AWS IoT Jobs' abort criteria and rollout rate; unlike
them, the engine never commands a gateway whose safety interlocks are active.

A gateway counts as **done** only when it reports the release running and committed after
its restart; downloading, installing and restarting count for nothing. It counts as
**failed** when it reports rolled back or failed, or when it has not finished within its
phase's timeout. A phase **advances** when its done share reaches the success threshold and
its soak time has passed; when its failures go beyond the error allowance the rollout
**pauses itself**, says why, and commands no further gateway until an operator resumes it.
No more gateways than the canary phase holds are ever commanded by a release that breaks on
start.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal

#: OTA states (gateway.wire.ota.OtaState) that end a gateway's attempt as a failure
FAILED_STATES = frozenset({"rolled-back", "failed", "cancelled"})


class Status(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    ABORTED = "aborted"
    COMPLETED = "completed"


class Progress(StrEnum):
    """Where one gateway of the rollout stands."""

    PENDING = "pending"  # in a phase, not commanded yet (waiting: see Member.waiting)
    COMMANDED = "commanded"  # told to install; its OTA status says how far it got
    DONE = "done"  # reported the release running and committed
    FAILED = "failed"  # rolled back, failed or timed out
    SKIPPED = "skipped"  # already ran the release


@dataclass(frozen=True)
class Phase:
    """One phase: ``count`` gateways, or ``percent`` of the target set (rounded up, at least
    one), hand-picked ``gateways`` first. ``success`` is the share of the phase that must be
    done to advance; ``max_failures`` how many may fail before the rollout pauses itself
    (``max_failure_share`` as a share of the phase instead, rounded down)."""

    name: str
    count: int | None = None
    percent: float | None = None
    gateways: tuple[str, ...] = ()
    success: float = 1.0
    max_failures: int | None = 0
    max_failure_share: float | None = None
    soak_s: float = 0.0
    timeout_s: float = 3600.0

    def size(self, total: int) -> int:
        if self.count is not None:
            return max(self.count, len(self.gateways))
        if self.percent is not None:
            return max(1, math.ceil(total * self.percent / 100), len(self.gateways))
        return total  # the last phase: everyone left

    def allowance(self, size: int) -> int:
        """How many failures the phase tolerates."""
        if self.max_failure_share is not None:
            return math.floor(size * self.max_failure_share)
        return self.max_failures or 0


@dataclass(frozen=True)
class Plan:
    release: str
    phases: tuple[Phase, ...]
    #: at most this many install commands per minute (None: no limit)
    per_minute: float | None = None


@dataclass(frozen=True)
class Site:
    """What the driver knows of a targeted gateway at a tick."""

    online: bool = True
    interlocks_active: bool = False
    in_window: bool = True
    running: str | None = None  # the version it reports running and committed


@dataclass
class Member:
    gateway: str
    phase: int
    progress: Progress = Progress.PENDING
    commanded_at: float | None = None
    reason: str = ""  # why it failed, or why it waits
    waiting: str = ""


@dataclass(frozen=True)
class Command:
    gateway: str
    action: Literal["install", "revert"]
    release: str


@dataclass
class Rollout:
    """The whole state of one rollout: plain data, stored as JSON by the driver."""

    plan: Plan
    status: Status = Status.RUNNING
    phase: int = 0
    phase_started: float | None = None
    reason: str = ""
    members: dict[str, Member] = field(default_factory=dict)
    #: failures of the current phase an operator accepted by resuming
    accepted_failures: int = 0
    sent: list[float] = field(default_factory=list)  # times of recent install commands


class Engine:
    """Decisions over one :class:`Rollout`."""

    def __init__(self, rollout: Rollout) -> None:
        self.rollout = rollout

    # -- what happened -----------------------------------------------------------------------

    def report(self, gateway: str, state: str, version: str, reason: str = "") -> None:
        """A gateway's OTA status: ``state`` as on the wire (``committed``, ``rolled-back``,
        ``failed``, ``cancelled``, or a step on the way, which changes nothing)."""
        member = self.rollout.members.get(gateway)
        if member is None or member.progress is not Progress.COMMANDED:
            return
        if state == "committed" and version == self.rollout.plan.release:
            member.progress = Progress.DONE
        elif state in FAILED_STATES:
            member.progress = Progress.FAILED
            member.reason = f"{state}: {reason}" if reason else state

    def pause(self, reason: str) -> None:
        if self.rollout.status is Status.RUNNING:
            self.rollout.status = Status.PAUSED
            self.rollout.reason = reason

    def resume(self) -> None:
        """An operator resumes a paused rollout; the failures so far are accepted."""
        if self.rollout.status is Status.PAUSED:
            self.rollout.status = Status.RUNNING
            self.rollout.reason = ""
            for member in self._phase_members():
                if member.progress is Progress.FAILED:
                    member.reason = f"{member.reason} (accepted on resume)".strip()
            self.rollout.accepted_failures = self._failures()

    def abort(self, *, revert: bool = False) -> list[Command]:
        """Stop for good; with ``revert`` the gateways that took the release are asked to go
        back to their previous version."""
        if self.rollout.status in (Status.ABORTED, Status.COMPLETED):
            return []
        self.rollout.status = Status.ABORTED
        if not revert:
            return []
        return [
            Command(m.gateway, "revert", self.rollout.plan.release)
            for m in self.rollout.members.values()
            if m.progress in (Progress.DONE, Progress.COMMANDED)
        ]

    # -- deciding ----------------------------------------------------------------------------

    def begin(self, now: float, targets: Mapping[str, Site]) -> None:
        """Fill the first phase (commands come with the first :meth:`tick`)."""
        if self.rollout.phase_started is None:
            self._take_in(targets)
            self.rollout.phase_started = now
            self._fill_phase(targets)

    def tick(self, now: float, targets: Mapping[str, Site]) -> list[Command]:
        """Bring the target set in, time out, pause or advance, and return the commands to
        send now."""
        rollout = self.rollout
        if rollout.status is not Status.RUNNING:
            return []
        self._take_in(targets)
        if rollout.phase_started is None:
            self.begin(now, targets)
        elif rollout.phase == len(rollout.plan.phases) - 1:
            self._fill_phase(targets)  # gateways that joined the target set since
        self._time_out(now)
        if self._over_allowance():
            return []
        while self._phase_finished(now):
            if rollout.phase + 1 >= len(rollout.plan.phases):
                rollout.status = Status.COMPLETED
                return []
            left = [m for m in self._phase_members() if m.progress is Progress.PENDING]
            rollout.phase += 1
            rollout.phase_started = now
            rollout.accepted_failures = 0
            for member in left:  # still waiting (interlocks, window): carried into the next
                member.phase = rollout.phase
            self._fill_phase(targets)
        return self._commands(now, targets)

    def _take_in(self, targets: Mapping[str, Site]) -> None:
        """Gateways of the target set not in the rollout yet: skipped when they already run
        the release, otherwise left to the next phase that fills."""
        for name, site in targets.items():
            if name in self.rollout.members:
                continue
            if site.running == self.rollout.plan.release:
                self.rollout.members[name] = Member(name, -1, Progress.SKIPPED)

    def _unassigned(self, targets: Mapping[str, Site]) -> list[str]:
        return sorted(n for n in targets if n not in self.rollout.members)

    def _fill_phase(self, targets: Mapping[str, Site]) -> None:
        index = self.rollout.phase
        phase = self.rollout.plan.phases[index]
        last = index == len(self.rollout.plan.phases) - 1
        pool = self._unassigned(targets)
        picked = [g for g in phase.gateways if g in pool]
        rest = [g for g in pool if g not in picked]
        size = len(pool) if last else phase.size(len(targets))
        for name in [*picked, *rest][: max(size, len(picked))]:
            self.rollout.members[name] = Member(name, index)

    def _phase_members(self) -> list[Member]:
        return [m for m in self.rollout.members.values() if m.phase == self.rollout.phase]

    def _failures(self) -> int:
        return sum(m.progress is Progress.FAILED for m in self._phase_members())

    def _over_allowance(self) -> bool:
        members = self._phase_members()
        phase = self.rollout.plan.phases[self.rollout.phase]
        failures = self._failures()
        allowed = phase.allowance(len(members)) + self.rollout.accepted_failures
        if failures > allowed:
            failed = sorted(m.gateway for m in members if m.progress is Progress.FAILED)
            self.pause(
                f"phase {phase.name}: {failures} of {len(members)} failed "
                f"(allowed {allowed}): {', '.join(failed)}"
            )
            return True
        return False

    def _time_out(self, now: float) -> None:
        phase = self.rollout.plan.phases[self.rollout.phase]
        for member in self._phase_members():
            at = member.commanded_at
            late = at is not None and now - at > phase.timeout_s
            if member.progress is Progress.COMMANDED and late:
                member.progress = Progress.FAILED
                member.reason = f"timed out after {phase.timeout_s:g} s"

    def _phase_finished(self, now: float) -> bool:
        members = self._phase_members()
        phase = self.rollout.plan.phases[self.rollout.phase]
        started = self.rollout.phase_started or now
        if now - started < phase.soak_s:
            return False
        if not members:
            return True
        done = sum(m.progress in (Progress.DONE, Progress.SKIPPED) for m in members)
        counted = len(members) - self.rollout.accepted_failures  # an operator accepted those
        return done >= phase.success * counted and not any(
            m.progress is Progress.COMMANDED for m in members
        )

    def _commands(self, now: float, targets: Mapping[str, Site]) -> list[Command]:
        plan = self.rollout.plan
        sent = [t for t in self.rollout.sent if now - t < 60.0]
        commands = []
        for member in self._phase_members():
            if member.progress is not Progress.PENDING:
                continue
            site = targets.get(member.gateway)
            member.waiting = _waiting(site, plan.release)
            if member.waiting in ("already runs it", "no longer targeted"):
                member.progress = Progress.SKIPPED
                member.reason, member.waiting = member.waiting, ""
                continue
            if member.waiting:
                continue
            if plan.per_minute is not None and len(sent) >= plan.per_minute:
                member.waiting = "rate limit"
                continue
            member.progress = Progress.COMMANDED
            member.commanded_at = now
            sent.append(now)
            commands.append(Command(member.gateway, "install", plan.release))
        self.rollout.sent = sent
        return commands


def _waiting(site: Site | None, release: str) -> str:
    """Why a gateway cannot be commanded now ("" when it can)."""
    if site is None:
        return "no longer targeted"
    if site.running == release:
        return "already runs it"
    if not site.online:
        return "offline"
    if site.interlocks_active:
        return "interlocks active"
    if not site.in_window:
        return "outside its maintenance window"
    return ""


def summary(rollout: Rollout) -> dict[str, int]:
    """How many gateways stand where."""
    counts = {p.value: 0 for p in Progress}
    for member in rollout.members.values():
        counts[member.progress.value] += 1
    return counts


def commanded(commands: Iterable[Command]) -> set[str]:
    return {c.gateway for c in commands if c.action == "install"}


# -- persistence: the driver keeps a rollout as JSON ---------------------------------------------


def to_json(rollout: Rollout) -> dict[str, Any]:
    return asdict(rollout)


def from_json(data: Mapping[str, Any]) -> Rollout:
    """The inverse of :func:`to_json`."""
    raw = dict(data)
    plan = dict(raw.pop("plan"))
    phases = tuple(Phase(**{**p, "gateways": tuple(p["gateways"])}) for p in plan.pop("phases"))
    members = {
        name: Member(**{**m, "progress": Progress(m["progress"])})
        for name, m in raw.pop("members").items()
    }
    status = Status(raw.pop("status"))
    return Rollout(plan=Plan(phases=phases, **plan), members=members, status=status, **raw)


def preview(plan: Plan, targets: Mapping[str, Site]) -> list[list[str]]:
    """Who would be in which phase if the rollout started now with this target set (the
    ones already on the release left out)."""
    engine = Engine(Rollout(plan))
    engine._take_in(targets)
    phases = []
    for index in range(len(plan.phases)):
        engine.rollout.phase = index
        engine._fill_phase(targets)
        phases.append(sorted(m.gateway for m in engine._phase_members()))
    return phases

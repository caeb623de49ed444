"""Interlocks as data: the schema of the site config's ``[[interlocks]]``.

A condition is a tree of comparisons over process-image points (``device.point``) joined by
``all`` / ``any`` / ``not``; an interlock turns a condition, with on- and off-delays and an
optional latch, into actions: a value demanded of a writable point at a priority, or an alarm.
Nothing here is evaluated from strings: every reference is checked against the device's
profile when the config is loaded (:func:`reference_problems`), so a misspelt point or an
enum label the device does not have is an error naming its key, before anything starts.
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, model_validator

from gateway.control.actuator import PRIORITY_PROTECTION
from gateway.control.alarms import Severity
from gateway.devices.profile import PointType, Profile
from gateway.errors import ProfileError
from gateway.validation import Strict

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=48)]
PointRef = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*\.[a-z][a-z0-9_]*$")]
Literal_ = int | float | bool | str


class Compare(Strict):
    """``point`` compared with a constant; exactly one operator key. Enum points compare with
    their labels (``eq = "stopped"``), bitfields test a bit by name (``has = "overspeed"``)."""

    point: PointRef
    eq: Literal_ | None = None
    ne: Literal_ | None = None
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    has: str | None = None
    #: For gt/ge/lt/le: once true, the condition holds until the value is back past the
    #: threshold by this much (no chattering around a limit).
    hysteresis: float = Field(default=0.0, ge=0)
    #: What this comparison being true means to a person (``residual current``): an alarm
    #: names the faults it found, not every fault it could have been.
    says: str | None = Field(default=None, min_length=1, max_length=80)

    @model_validator(mode="after")
    def _one_operator(self) -> Self:
        given = [op for op in OPERATORS if getattr(self, op) is not None]
        if len(given) != 1:
            raise ValueError(
                f"a comparison needs exactly one of {', '.join(OPERATORS)} (got "
                f"{', '.join(given) or 'none'})"
            )
        if self.hysteresis and given[0] not in ("gt", "ge", "lt", "le"):
            raise ValueError("hysteresis applies to gt/ge/lt/le only")
        return self

    @property
    def operator(self) -> str:
        return next(op for op in OPERATORS if getattr(self, op) is not None)

    @property
    def operand(self) -> Literal_:
        value = getattr(self, self.operator)
        assert value is not None
        return value  # type: ignore[no-any-return]


OPERATORS = ("eq", "ne", "gt", "ge", "lt", "le", "has")


class AllOf(Strict):
    all: list[Condition] = Field(min_length=1)


class AnyOf(Strict):
    any: list[Condition] = Field(min_length=1)


class Not(Strict):
    not_: Condition = Field(alias="not")


Condition = Compare | AllOf | AnyOf | Not
AllOf.model_rebuild()
AnyOf.model_rebuild()
Not.model_rebuild()


class WriteAction(Strict):
    """Demand ``value`` of a writable point while the interlock is active; on release the
    point goes to the next lower demand, or to ``release`` if nothing else demands it."""

    write: PointRef
    value: Literal_
    priority: int = Field(default=PRIORITY_PROTECTION, ge=1, le=16)
    release: Literal_ | None = None
    #: The value is a ceiling: the lowest of all ceilings on the point caps whatever wins.
    limit: bool = False
    #: Increases of the point are ramped at this many units per second (decreases never are).
    ramp_per_s: float | None = Field(default=None, gt=0)


class AlarmAction(Strict):
    """Raise an alarm when the interlock becomes active; clear it when it is released."""

    alarm: Severity
    message: str = Field(min_length=1, max_length=200)


class InhibitAction(Strict):
    """Suspend a named function of a device while active, e.g. ``lockers-1.deposits``: the
    gateway refuses the requests it names (a deposit) and keeps the others (pick-ups)."""

    inhibit: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*\.(deposits)$")]


Action = WriteAction | AlarmAction | InhibitAction


class Interlock(Strict):
    """A custom interlock. The standard library (I1–I10) builds these from parameters."""

    name: Name
    when: Condition
    on_delay_s: float = Field(default=0.0, ge=0, le=3600)
    off_delay_s: float = Field(default=0.0, ge=0, le=3600)
    #: Stays active once tripped until an authorised reset, accepted only while ``when`` is
    #: false and ``reset_when`` (if given) is true. Only a condition known true latches; one
    #: that is unknown (an input lost) acts like any other trip and stands down by itself.
    latch: bool = False
    reset_when: Condition | None = None
    #: Said when a reset is refused because ``reset_when`` is not met (what to do first).
    reset_hint: str = Field(default="", max_length=200)
    actions: list[Action] = Field(min_length=1)
    #: While its condition is unknown (an input stale, bad or offline) the interlock still
    #: acts, but raises one "input not available" alarm at this severity instead of its own.
    unknown_severity: Severity = Severity.MAJOR
    #: ... raised once the condition has been unknown this long (the actions do not wait):
    #: time for a silent device to be declared offline, so the alarm names that root cause
    #: and is suppressed under its comm-loss alarm instead of standing beside it.
    unknown_alarm_delay_s: float = Field(default=5.0, ge=0, le=600)
    #: What its actions do, for that alarm ("chargers held at 0 A, PV shut down").
    precaution: str = Field(default="", max_length=200)

    @model_validator(mode="after")
    def _reset_needs_latch(self) -> Self:
        if self.reset_when is not None and not self.latch:
            raise ValueError("reset_when applies to latching interlocks only (set latch = true)")
        return self


# -- checks against the profiles -----------------------------------------------------------


def compares(condition: Condition) -> list[Compare]:
    """Every comparison in a condition tree, depth first."""
    if isinstance(condition, Compare):
        return [condition]
    if isinstance(condition, AllOf):
        return [c for sub in condition.all for c in compares(sub)]
    if isinstance(condition, AnyOf):
        return [c for sub in condition.any for c in compares(sub)]
    return compares(condition.not_)


def split_ref(ref: str) -> tuple[str, str]:
    device, point = ref.split(".", 1)
    return device, point


def reference_problems(where: str, interlock: Interlock, profiles: dict[str, Profile]) -> list[str]:
    """Every reference of an interlock checked against the site's devices and profiles."""
    problems = []
    conditions = [("when", interlock.when)]
    if interlock.reset_when is not None:
        conditions.append(("reset_when", interlock.reset_when))
    for key, cond in conditions:
        for cmp in compares(cond):
            problem = _compare_problem(cmp, profiles)
            if problem:
                problems.append(f"{where}.{key}: {cmp.point}: {problem}")
    for i, action in enumerate(interlock.actions):
        if isinstance(action, WriteAction):
            problem = _write_problem(action, profiles)
            if problem:
                problems.append(f"{where}.actions[{i}].write: {action.write}: {problem}")
    return problems


def _point(ref: str, profiles: dict[str, Profile]) -> tuple[Profile | None, str | None]:
    device, name = split_ref(ref)
    profile = profiles.get(device)
    if profile is None:
        return None, f"no device {device!r} on this site (devices: {', '.join(profiles)})"
    try:
        profile.point(name)
    except ProfileError:
        return None, f"profile {profile.model} has no point {name!r}"
    return profile, None


def _compare_problem(cmp: Compare, profiles: dict[str, Profile]) -> str | None:
    profile, problem = _point(cmp.point, profiles)
    if profile is None:
        return problem
    point = profile.point(split_ref(cmp.point)[1])
    if not point.readable:
        return "is write-only; a condition needs a readable point"
    op, operand = cmp.operator, cmp.operand
    if op == "has":
        if point.type is not PointType.BITFIELD or not point.bits:
            return "'has' needs a bitfield point"
        if operand not in point.bits.values():
            return f"no bit {operand!r} (bits: {', '.join(point.bits.values())})"
    elif isinstance(operand, str):
        if point.type is not PointType.ENUM or not point.enum:
            return f"compares with {operand!r} but is not an enum point"
        if operand not in point.enum.values():
            return f"no value {operand!r} (values: {', '.join(point.enum.values())})"
    return None


def _write_problem(action: WriteAction, profiles: dict[str, Profile]) -> str | None:
    profile, problem = _point(action.write, profiles)
    if profile is None:
        return problem
    point = profile.point(split_ref(action.write)[1])
    if not point.writable:
        return "is not writable"
    for value in (action.value, action.release):
        if isinstance(value, str) and (not point.enum or value not in point.enum.values()):
            known = ", ".join(point.enum.values()) if point.enum else "none: not an enum"
            return f"no value {value!r} (values: {known})"
    return None

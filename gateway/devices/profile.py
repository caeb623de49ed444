"""Device profiles: one TOML file per device model, loaded strictly.

A profile is data, not code: the register map of one device model (its points, commands,
watchdog trio, unreadable ranges and request limits). The gateway's bus layer and the HIL
simulators both build on the same files in ``gateway/devices/profiles/``.

SunSpec devices do not carry absolute addresses: their points name a SunSpec model id and an
offset from the model's ID register, and are placed at run time by walking the model chain
(see :mod:`gateway.devices.sunspec`).
"""

from __future__ import annotations

import tomllib
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Annotated, Literal, Self

from pydantic import Field, ValidationError, model_validator

from gateway.devices.roles import SPECS, Role, RoleBinding, RoleSpec
from gateway.errors import ProfileError
from gateway.validation import Strict, format_validation_error


class Table(StrEnum):
    """The four Modbus data tables."""

    COIL = "coil"
    DISCRETE = "discrete"
    INPUT = "input"
    HOLDING = "holding"

    @property
    def is_bits(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE)

    @property
    def writable(self) -> bool:
        return self in (Table.COIL, Table.HOLDING)

    @property
    def read_function(self) -> int:
        return {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}[self]


class PointType(StrEnum):
    U16 = "u16"
    I16 = "i16"
    U32 = "u32"
    I32 = "i32"
    F32 = "f32"
    BIT = "bit"
    ENUM = "enum"
    BITFIELD = "bitfield"
    STRING = "string"


class WordOrder(StrEnum):
    BIG = "big"  # high word first (Modbus convention, docs/devices.md#conventions)
    LITTLE = "little"  # low word first (e.g. Phoenix EV-ETH)


class PollClass(StrEnum):
    """How often a point is read. Periods come from the site config."""

    SAFETY = "safety"  # inputs of interlocks; read before telemetry
    TELEMETRY = "telemetry"
    SLOW = "slow"  # identity, nameplate, counters
    NEVER = "never"  # write-only points (heartbeats, commands)


class Access(StrEnum):
    R = "r"
    RW = "rw"
    W = "w"


class DeviceKind(StrEnum):
    ELEVATOR = "elevator"
    LOCKER = "locker"
    CHARGER = "charger"
    PV_INVERTER = "pv_inverter"
    METER = "meter"
    SAFETY_IO = "safety_io"


_WIDTH = {
    PointType.U16: 1,
    PointType.I16: 1,
    PointType.ENUM: 1,
    PointType.U32: 2,
    PointType.I32: 2,
    PointType.F32: 2,
    PointType.BIT: 1,
}
_RAW_RANGE = {
    PointType.U16: (0, 0xFFFF),
    PointType.ENUM: (0, 0xFFFF),
    PointType.I16: (-0x8000, 0x7FFF),
    PointType.U32: (0, 0xFFFF_FFFF),
    PointType.I32: (-0x8000_0000, 0x7FFF_FFFF),
    PointType.BIT: (0, 1),
}


class Point(Strict):
    """One value of a device: where it lives and how to decode it."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    table: Table
    type: PointType
    address: Annotated[int, Field(ge=0, le=0xFFFF)] | None = None
    sunspec_model: Annotated[int, Field(ge=1, le=0xFFFE)] | None = None
    offset: Annotated[int, Field(ge=2)] | None = None
    length: Annotated[int, Field(ge=1, le=64)] | None = None
    word_order: WordOrder | None = None
    scale: float | None = None
    scale_factor: str | None = None
    unit: str | None = None
    na: int | None = None
    enum: dict[int, str] | None = None
    bits: dict[int, str] | None = None
    access: Access | None = None
    poll: PollClass | None = None
    description: str = ""
    #: What a person reads for this point (English; translated by the fleet's catalogue).
    label: str = ""
    #: What a person reads for each value of an enum, bit or flag point, or for each bit of a
    #: bitfield when it is set (English): ``{0 = "fire alarm", 1 = "normal"}``.
    value_labels: dict[int, str] | None = None
    #: Values (bits of a bitfield, when set) that read as an alarm or out-of-service state.
    alarm_values: tuple[int, ...] = ()
    #: Bookkeeping a person never needs (heartbeats, map versions): kept from people's
    #: screens, still in the API. Scale-factor points are hidden without it.
    internal: bool = False
    #: Points that only make sense from one reading (a charger's current, power and state; a
    #: meter's phases and total) share a group: read in one request, every member at the
    #: fastest poll class of the group, so they never show two different moments.
    group: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")] | None = None

    @property
    def display_name(self) -> str:
        """The label a person reads, or the point's name where the profile gives none."""
        return self.label or self.name

    @property
    def width(self) -> int:
        """Number of registers (or bits, for bit points) the point occupies."""
        if self.type in (PointType.STRING, PointType.BITFIELD, PointType.ENUM):
            return self.length or 1
        return _WIDTH[self.type]

    @property
    def raw_range(self) -> tuple[int, int] | None:
        """Inclusive range of the raw integer, or None for f32 and strings."""
        if self.type in (PointType.BITFIELD, PointType.ENUM):
            return (0, (1 << (16 * self.width)) - 1)
        return _RAW_RANGE.get(self.type)

    @property
    def writable(self) -> bool:
        return self.access in (Access.RW, Access.W)

    @property
    def readable(self) -> bool:
        return self.access in (Access.R, Access.RW)

    @model_validator(mode="after")
    def _check_fields(self) -> Self:
        where = f"point {self.name!r}"
        if self.type is PointType.BIT and not self.table.is_bits:
            raise ValueError(f"{where}: type 'bit' needs table coil or discrete, not {self.table}")
        if self.type is not PointType.BIT and self.table.is_bits:
            raise ValueError(f"{where}: table {self.table} holds bits; type must be 'bit'")
        sized = (PointType.STRING, PointType.BITFIELD, PointType.ENUM)
        if self.length is not None and self.type not in sized:
            raise ValueError(f"{where}: 'length' applies only to string, bitfield and enum points")
        if self.type in (PointType.BITFIELD, PointType.ENUM) and (self.length or 1) > 2:
            raise ValueError(f"{where}: a {self.type} is 1 or 2 registers, not {self.length}")
        if self.type is PointType.STRING and self.length is None:
            raise ValueError(f"{where}: a string point needs 'length' (registers)")
        if (self.type is PointType.ENUM) != (self.enum is not None):
            raise ValueError(f"{where}: 'enum' labels are required for, and only for, type enum")
        if (self.type is PointType.BITFIELD) != (self.bits is not None):
            raise ValueError(f"{where}: 'bits' names are required for, and only for, bitfield")
        if self.bits is not None and any(not 0 <= b < 16 * self.width for b in self.bits):
            raise ValueError(f"{where}: bit numbers must be within 0..{16 * self.width - 1}")
        if self.scale is not None and self.scale_factor is not None:
            raise ValueError(f"{where}: give 'scale' or 'scale_factor', not both")
        numeric = (PointType.U16, PointType.I16, PointType.U32, PointType.I32, PointType.F32)
        if (self.scale is not None or self.scale_factor is not None) and self.type not in numeric:
            raise ValueError(f"{where}: only numeric points can be scaled, not {self.type}")
        if self.scale == 0:
            raise ValueError(f"{where}: scale must not be 0")
        if self.na is not None and (rng := self.raw_range) is not None:
            lo, hi = rng
            if not lo <= self.na <= hi:
                raise ValueError(f"{where}: na sentinel {self.na} is outside {lo}..{hi}")
        if self.address is None and (self.sunspec_model is None or self.offset is None):
            raise ValueError(f"{where}: needs 'address', or 'sunspec_model' and 'offset'")
        if self.address is not None and (self.sunspec_model or self.offset):
            raise ValueError(f"{where}: give 'address' or 'sunspec_model'+'offset', not both")
        if self.address is not None and self.address + self.width > 0x10000:
            raise ValueError(f"{where}: address {self.address} + {self.width} passes 65535")
        if self.access is Access.W and self.poll not in (None, PollClass.NEVER):
            raise ValueError(f"{where}: a write-only point cannot be polled ({self.poll})")
        if self.access is not None and self.access is not Access.R and not self.table.writable:
            raise ValueError(f"{where}: table {self.table} is read-only; access must be 'r'")
        return self


class Command(Strict):
    """A named write: to a writable point, with a fixed value or one given by the caller."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    point: str
    value: int | float | None = None
    description: str = ""


class Watchdog(Strict):
    """The device's communication watchdog trio (timeout, heartbeat, safe value); see
    docs/devices.md#the-watchdog-trio."""

    timeout: str
    timeout_unit_s: float = Field(gt=0)
    default_timeout_s: float = Field(gt=0)
    heartbeat: str
    #: counter: write an incrementing value; constant: write ``heartbeat_value``;
    #: timeout: rewrite the timeout itself (devices without a heartbeat register).
    heartbeat_mode: Literal["counter", "constant", "timeout"] = "counter"
    heartbeat_value: int = 1
    safe_value: str | None = None
    remaining: str | None = None
    remaining_unit_s: float = Field(default=1.0, gt=0)
    failsafe: str | None = None


class Range(Strict):
    """An inclusive address range of one table that the device answers with exception 02."""

    table: Table
    start: Annotated[int, Field(ge=0, le=0xFFFF)]
    end: Annotated[int, Field(ge=0, le=0xFFFF)]

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end < self.start:
            raise ValueError(f"unreadable range {self.start}..{self.end}: end before start")
        return self

    def overlaps(self, start: int, count: int) -> bool:
        return start <= self.end and self.start <= start + count - 1


class SunSpec(Strict):
    """Where to look for the 'SunS' marker and which models the profile's points use."""

    base_addresses: tuple[int, ...] = (40000, 0, 50000)
    models: list[int]


class Profile(Strict):
    """The register map of one device model."""

    model: Annotated[str, Field(pattern=r"^[A-Z0-9][A-Z0-9-]*$")]
    kind: DeviceKind
    description: str
    word_order: WordOrder = WordOrder.BIG
    max_read_registers: Annotated[int, Field(ge=1, le=125)] = 125
    max_read_bits: Annotated[int, Field(ge=1, le=2000)] = 2000
    unreadable: tuple[Range, ...] = ()
    sunspec: SunSpec | None = None
    points: list[Point]
    commands: tuple[Command, ...] = ()
    watchdog: Watchdog | None = None
    key_points: tuple[str, ...] = ()
    #: Registers that say which model answers: point name → the value this model reads
    #: there (the SIO-1's ``map_version``); checked by whoever must know the model is right.
    identity: dict[str, int] = Field(default_factory=dict)
    #: What the points mean to the standard interlocks (gateway.devices.roles).
    roles: dict[Role, RoleBinding] = Field(default_factory=dict)
    #: A site profile that replaces the shipped profile of the same model must say so.
    overrides: bool = False
    #: Where the register map comes from: the manufacturer's document and its version.
    source: str = ""

    def role(self, role: Role) -> RoleBinding | None:
        """The binding of a role, or None when the device cannot play it."""
        return self.roles.get(role)

    def role_point(self, role: Role) -> str | None:
        """The (first) point that plays a role, or None."""
        binding = self.roles.get(role)
        return None if binding is None else binding.names[0]

    @property
    def point_map(self) -> dict[str, Point]:
        return {p.name: p for p in self.points}

    def point(self, name: str) -> Point:
        try:
            return self.point_map[name]
        except KeyError:
            raise ProfileError(f"profile {self.model}: no point named {name!r}") from None

    def resolved(self, point: Point) -> Point:
        """The point with defaults applied (word order, access, poll class)."""
        access = point.access or (Access.R if not point.table.writable else Access.RW)
        poll = point.poll or (PollClass.NEVER if access is Access.W else PollClass.TELEMETRY)
        return point.model_copy(
            update={
                "word_order": point.word_order or self.word_order,
                "access": access,
                "poll": poll,
            }
        )

    @model_validator(mode="after")
    def _check_cross_fields(self) -> Self:
        names = [p.name for p in self.points]
        if dups := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"duplicate point names: {', '.join(dups)}")
        points = self.point_map
        self._check_addressing()
        self._check_overlaps()
        self._check_groups()
        for p in self.points:
            if p.scale_factor is not None:
                sf = points.get(p.scale_factor)
                if sf is None or sf.type is not PointType.I16:
                    raise ValueError(
                        f"point {p.name!r}: scale_factor {p.scale_factor!r} must name an i16 point"
                    )
        for c in self.commands:
            target = points.get(c.point)
            if target is None:
                raise ValueError(f"command {c.name!r}: no point named {c.point!r}")
            if target.access is Access.R or not target.table.writable:
                raise ValueError(f"command {c.name!r}: point {c.point!r} is not writable")
        if self.watchdog is not None:
            wd = self.watchdog
            for field in ("timeout", "heartbeat", "safe_value", "remaining", "failsafe"):
                ref = getattr(wd, field)
                if ref is not None and ref not in points:
                    raise ValueError(f"watchdog.{field}: no point named {ref!r}")
        for k in self.key_points:
            if k not in points:
                raise ValueError(f"key_points: no point named {k!r}")
        for k in self.identity:
            if k not in points:
                raise ValueError(f"identity: no point named {k!r}")
        problems = [
            problem
            for role, binding in self.roles.items()
            for problem in _binding_problems(role, binding, self.kind, points)
        ]
        setpoint = self.roles.get(Role.CHARGER_CURRENT_SETPOINT)
        if setpoint is not None and setpoint.pause_by_lock and Role.CHARGER_LOCK not in self.roles:
            problems.append(
                "roles.charger_current_setpoint.pause_by_lock: needs a charger_lock role to "
                "pause with"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _check_addressing(self) -> None:
        for p in self.points:
            if self.sunspec is None and p.address is None:
                raise ValueError(f"point {p.name!r}: needs an 'address' (not a SunSpec profile)")
            if self.sunspec is not None and p.sunspec_model not in self.sunspec.models:
                raise ValueError(
                    f"point {p.name!r}: sunspec_model {p.sunspec_model} is not one of "
                    f"sunspec.models {self.sunspec.models}"
                )

    @property
    def groups(self) -> dict[str, list[Point]]:
        """The points read together, by group name."""
        found: dict[str, list[Point]] = {}
        for p in self.points:
            if p.group is not None:
                found.setdefault(p.group, []).append(p)
        return found

    def _check_groups(self) -> None:
        """A group can be one read request: one table, one addressing, readable, short enough
        and clear of the unreadable ranges."""
        for name, members in self.groups.items():
            where = f"group {name!r} ({', '.join(p.name for p in members)})"
            if len(members) < 2:
                raise ValueError(f"{where}: a group needs at least two points")
            if len({p.table for p in members}) > 1:
                raise ValueError(f"{where}: its points are in different tables, one read cannot")
            if len({p.sunspec_model for p in members}) > 1:
                raise ValueError(f"{where}: its points are in different SunSpec models")
            if any(p.access is Access.W or p.poll is PollClass.NEVER for p in members):
                raise ValueError(f"{where}: a point that is not read cannot be in a group")
            starts = [p.address if p.address is not None else p.offset or 0 for p in members]
            start = min(starts)
            end = max(a + p.width for a, p in zip(starts, members, strict=True))
            limit = self.max_read_bits if members[0].table.is_bits else self.max_read_registers
            if end - start > limit:
                raise ValueError(
                    f"{where}: spans {end - start} addresses, more than one read ({limit})"
                )
            if members[0].address is not None:
                for r in self.unreadable:
                    if r.table is members[0].table and r.overlaps(start, end - start):
                        raise ValueError(
                            f"{where}: unreadable range {r.start}..{r.end} lies inside it"
                        )

    def _check_overlaps(self) -> None:
        seen: dict[tuple[object, ...], str] = {}
        for p in self.points:
            if p.address is not None:
                key_base: tuple[object, ...] = (p.table, None)
                start = p.address
            else:
                key_base = (p.table, p.sunspec_model)
                start = p.offset or 0
            for a in range(start, start + p.width):
                key = (*key_base, a)
                if key in seen:
                    raise ValueError(
                        f"points {seen[key]!r} and {p.name!r} overlap at {p.table} address {a}"
                    )
                seen[key] = p.name


def _binding_problems(
    role: Role, binding: RoleBinding, kind: DeviceKind, points: dict[str, Point]
) -> list[str]:
    """Why a binding does not give the role what it needs (empty: it does)."""
    spec = SPECS[role]
    where = f"roles.{role.value}"
    if kind.value != spec.kind:
        return [f"{where}: a role of a {spec.kind}, this profile is a {kind.value}"]
    if len(binding.names) != spec.points:
        want = "one point ('point')" if spec.points == 1 else f"{spec.points} points ('points')"
        return [f"{where}: needs {want}, got {len(binding.names)}"]
    problems = []
    for name in binding.names:
        p = points.get(name)
        if p is None:
            problems.append(f"{where}: no point named {name!r}")
            continue
        numeric = p.type in (
            PointType.U16,
            PointType.I16,
            PointType.U32,
            PointType.I32,
            PointType.F32,
        )
        if spec.shape == "numeric" and not numeric:
            problems.append(f"{where}: point {name!r} is {p.type}, the role needs a number")
        if spec.shape == "state" and p.type not in (PointType.ENUM, PointType.STRING):
            problems.append(f"{where}: point {name!r} is {p.type}, the role needs an enum or text")
        if spec.shape == "enum" and p.type is not PointType.ENUM:
            problems.append(f"{where}: point {name!r} is {p.type}, the role needs an enum")
        if spec.shape == "bitfield" and p.type is not PointType.BITFIELD:
            problems.append(f"{where}: point {name!r} is {p.type}, the role needs a bitfield")
        if spec.writable and p.access is not None and p.access.value == "r":
            problems.append(f"{where}: point {name!r} is read-only, the role writes it")
        if spec.writable and not p.table.writable:
            problems.append(f"{where}: point {name!r} is in table {p.table}, the role writes it")
        problems += _label_problems(where, spec, binding, p)
    if binding.fallback is not None and binding.fallback not in points:
        problems.append(f"{where}.fallback: no point named {binding.fallback!r}")
    return problems


def _label_problems(where: str, spec: RoleSpec, binding: RoleBinding, p: Point) -> list[str]:
    problems = []
    for field in spec.labels:
        value = getattr(binding, field)
        if value in (None, ()):
            problems.append(f"{where}: needs '{field}' ({spec.what})")
    if p.type is PointType.STRING:
        return problems  # text: any value may appear
    labels = set((p.enum or {}).values())
    names = set((p.bits or {}).values())
    for field in ("active", "ok"):
        for label in getattr(binding, field):
            if label not in labels:
                problems.append(
                    f"{where}.{field}: {label!r} is not a label of point {p.name!r} "
                    f"({', '.join(sorted(labels)) or 'no labels'})"
                )
    for field in ("on", "off"):
        value = getattr(binding, field)
        if isinstance(value, str) and value not in labels:
            problems.append(
                f"{where}.{field}: {value!r} is not a label of point {p.name!r} "
                f"({', '.join(sorted(labels)) or 'no labels: give a number'})"
            )
    for bit in binding.bits:
        if bit not in names:
            problems.append(f"{where}.bits: {bit!r} is not a bit of point {p.name!r}")
    return problems


def parse_profile(text: str, source: str) -> Profile:
    """Parse one profile from TOML text; errors name the file and the exact key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{source}: not valid TOML: {exc}") from None
    return build_profile(data, source)


def build_profile(data: object, source: str) -> Profile:
    """A profile from parsed data (a file's, or a table inside a site document)."""
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(f"{source}: {format_validation_error(exc)}") from None
    points = [profile.resolved(p) for p in profile.points]
    return profile.model_copy(update={"points": _read_together(points)})


#: Poll classes from the most to the least frequent.
_FASTEST_FIRST = (PollClass.SAFETY, PollClass.TELEMETRY, PollClass.SLOW, PollClass.NEVER)


def _read_together(points: list[Point]) -> list[Point]:
    """``points`` with every member of a group at the group's fastest poll class."""
    fastest: dict[str, PollClass] = {}
    for p in points:
        if p.group is not None and p.poll is not None:
            known = fastest.get(p.group, PollClass.NEVER)
            fastest[p.group] = min(known, p.poll, key=_FASTEST_FIRST.index)
    return [
        p.model_copy(update={"poll": fastest[p.group]})
        if p.group is not None and p.poll is not fastest[p.group]
        else p
        for p in points
    ]


@cache
def load_profile(model: str) -> Profile:
    """Load the shipped profile of a device model, e.g. ``load_profile("ELV-24476")``."""
    path = resources.files("gateway.devices.profiles").joinpath(f"{model}.toml")
    if not path.is_file():
        known = ", ".join(available_models())
        raise ProfileError(f"unknown device profile {model!r}; known profiles: {known}")
    return parse_profile(path.read_text(encoding="utf-8"), f"profiles/{model}.toml")


def available_models() -> list[str]:
    """Model names of every shipped profile."""
    folder = resources.files("gateway.devices.profiles")
    return sorted(
        f.name.removesuffix(".toml") for f in folder.iterdir() if f.name.endswith(".toml")
    )

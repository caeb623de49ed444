"""The site config: which gateway this is, its buses, its devices and its interlocks.

A site config is a TOML file that a technician edits. It is validated completely before
anything starts — schema, then references between sections, then every device's profile —
and every problem is reported with its exact key, so a bad config never starts half a gateway.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, ValidationError, field_validator, model_validator

from gateway.control.rules import ControlConfig, Interlock, reference_problems
from gateway.control.standard import interlocks as standard_interlocks
from gateway.control.standard.interlocks import Safety
from gateway.devices.profile import DeviceKind, PollClass, Profile, load_profile
from gateway.errors import ConfigError, ProfileError
from gateway.uplink.config import UplinkConfig
from gateway.uplink.reporting import reference_problems as report_reference_problems
from gateway.validation import Strict, validation_problems

STANDARD_BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=48)]


class PollPeriods(Strict):
    """Seconds between reads of each poll class."""

    safety: float = Field(default=0.2, gt=0, le=60)
    telemetry: float = Field(default=1.0, gt=0, le=3600)
    slow: float = Field(default=30.0, gt=0, le=86400)

    def period(self, cls: PollClass) -> float | None:
        return None if cls is PollClass.NEVER else float(getattr(self, cls.value))


class PollOverrides(Strict):
    safety: float | None = Field(default=None, gt=0, le=60)
    telemetry: float | None = Field(default=None, gt=0, le=3600)
    slow: float | None = Field(default=None, gt=0, le=86400)


class GatewayIdentity(Strict):
    site: Name
    id: Name


class RtuBus(Strict):
    """An RS-485 (or USB serial) line: one master, up to 247 units."""

    name: Name
    kind: Literal["rtu"]
    port: str
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8

    @field_validator("baudrate")
    @classmethod
    def _standard_rate(cls, v: int) -> int:
        if v not in STANDARD_BAUDRATES:
            rates = ", ".join(map(str, STANDARD_BAUDRATES))
            raise ValueError(f"{v} is not a standard rate ({rates})")
        return v


class TcpBus(Strict):
    """A Modbus TCP endpoint (a device, or a TCP-to-RTU gateway with several units)."""

    name: Name
    kind: Literal["tcp"]
    host: str
    port: int = 502

    @field_validator("port")
    @classmethod
    def _port_range(cls, v: int) -> int:
        if not 1 <= v <= 65535:
            raise ValueError(f"{v} is outside 1..65535")
        return v


Bus = Annotated[RtuBus | TcpBus, Field(discriminator="kind")]


class Device(Strict):
    name: Name
    profile: str
    bus: str
    unit_id: int
    #: Minimum silence between two requests to this unit (some chargers need 100 ms).
    min_gap_ms: float = Field(default=0, ge=0, le=10000)
    poll: PollOverrides = PollOverrides()
    #: Where to probe for the SunSpec marker (SunSpec profiles only).
    sunspec_base: int | None = Field(default=None, ge=0, le=65535)
    #: The device's communication watchdog, written at start (devices with a watchdog only);
    #: without it the device keeps its own setting. Never 0: some devices then ignore it.
    watchdog_timeout_s: float | None = Field(default=None, gt=0, le=3600)


class SiteConfig(Strict):
    gateway: GatewayIdentity
    poll: PollPeriods = PollPeriods()
    control: ControlConfig = ControlConfig()
    buses: list[Bus]
    devices: list[Device]
    interlocks: list[Interlock] = Field(default_factory=list)
    safety: Safety = Safety()
    #: The MQTT uplink to the fleet manager (gateway.uplink.config); none: runs offline.
    uplink: UplinkConfig | None = None

    @model_validator(mode="after")
    def _check_references(self) -> Self:
        problems = _reference_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def bus(self, name: str) -> RtuBus | TcpBus:
        return next(b for b in self.buses if b.name == name)

    def devices_on(self, bus: str) -> list[Device]:
        return [d for d in self.devices if d.bus == bus]

    def all_interlocks(self) -> list[Interlock]:
        """The site's own interlocks and the standard ones it enabled."""
        profiles = {d.name: load_profile(d.profile) for d in self.devices}
        return [*standard_interlocks.build(self.safety, profiles), *self.interlocks]

    def periods(self, device: Device) -> PollPeriods:
        """The device's poll periods: site defaults with its overrides applied."""
        overrides = {k: v for k, v in device.poll.model_dump().items() if v is not None}
        return self.poll.model_copy(update=overrides)


def _reference_problems(cfg: SiteConfig) -> list[str]:
    """Checks across sections, each message starting with its key path."""
    problems: list[str] = []
    problems += _duplicates("buses", [b.name for b in cfg.buses])
    problems += _duplicates("devices", [d.name for d in cfg.devices])
    buses = {b.name: b for b in cfg.buses}
    seen_units: dict[tuple[str, int], int] = {}
    for i, dev in enumerate(cfg.devices):
        where = f"devices[{i}]"
        bus = buses.get(dev.bus)
        if bus is None:
            known = ", ".join(sorted(buses)) or "none defined"
            problems.append(f"{where}.bus: {dev.bus!r} is not a bus of this site (buses: {known})")
        else:
            lo, hi = (1, 247) if isinstance(bus, RtuBus) else (0, 255)
            if not lo <= dev.unit_id <= hi:
                problems.append(f"{where}.unit_id: {dev.unit_id} is outside {lo}..{hi}")
            key = (dev.bus, dev.unit_id)
            if key in seen_units:
                problems.append(
                    f"{where}.unit_id: {dev.unit_id} is already used on bus {dev.bus!r} "
                    f"by devices[{seen_units[key]}]"
                )
            seen_units.setdefault(key, i)
        problems += _profile_problems(where, dev)
    problems += _duplicates("interlocks", [i.name for i in cfg.interlocks])
    profiles = _loadable_profiles(cfg)
    for i, interlock in enumerate(cfg.interlocks):
        problems += reference_problems(f"interlocks[{i}]", interlock, profiles)
    problems += standard_interlocks.scope_problems(cfg.safety, profiles)
    if cfg.uplink is not None:
        points = {name: [p.name for p in profile.points] for name, profile in profiles.items()}
        problems += report_reference_problems("uplink", cfg.uplink, points)
    if not problems:
        problems += _standard_problems(cfg, profiles)
    return problems


def _standard_problems(cfg: SiteConfig, profiles: dict[str, Profile]) -> list[str]:
    """The standard interlocks must check against the profiles like a site's own ones."""
    problems = []
    own = {i.name for i in cfg.interlocks}
    for spec in standard_interlocks.build(cfg.safety, profiles):
        if spec.name in own:
            problems.append(f"interlocks: {spec.name!r} is the name of a standard interlock")
        for problem in reference_problems(f"safety ({spec.name})", spec, profiles):
            if "is not writable" not in problem:  # SIO-1 relays: written by its driver
                problems.append(problem)
    return problems


def _loadable_profiles(cfg: SiteConfig) -> dict[str, Profile]:
    """The profile of every device whose profile loads (the others are reported already)."""
    out = {}
    for dev in cfg.devices:
        try:
            out[dev.name] = load_profile(dev.profile)
        except ProfileError:
            continue
    return out


def _profile_problems(where: str, dev: Device) -> list[str]:
    try:
        profile = load_profile(dev.profile)
    except ProfileError as exc:
        return [f"{where}.profile: {exc}"]
    if dev.sunspec_base is not None and profile.sunspec is None:
        return [f"{where}.sunspec_base: profile {dev.profile} is not a SunSpec device"]
    if dev.watchdog_timeout_s is not None and profile.watchdog is None:
        return [f"{where}.watchdog_timeout_s: profile {dev.profile} has no watchdog"]
    if (
        dev.watchdog_timeout_s is not None
        and profile.kind is DeviceKind.SAFETY_IO
        and not 0.1 <= dev.watchdog_timeout_s <= 10
    ):
        return [f"{where}.watchdog_timeout_s: {dev.watchdog_timeout_s} is outside 0.1..10 (SIO-1)"]
    return []


def _duplicates(section: str, names: list[str]) -> list[str]:
    out = []
    for i, name in enumerate(names):
        if name in names[:i]:
            out.append(
                f"{section}[{i}].name: {name!r} is used twice (first at [{names.index(name)}])"
            )
    return out


def parse_site(text: str, source: str) -> SiteConfig:
    """Validate a site config completely; raise :class:`ConfigError` listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    try:
        return SiteConfig.model_validate(data)
    except ValidationError as exc:
        problems: list[str] = []
        for line in validation_problems(exc):
            problems.extend(line.split("\n"))
        raise ConfigError(source, problems) from None


def load_site(path: str | Path) -> SiteConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror}"]) from None
    return parse_site(text, str(path))


def device_profile(device: Device) -> Profile:
    """The profile of a device of a validated site config."""
    return load_profile(device.profile)

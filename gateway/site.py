"""The site config: which gateway this is, its buses, its devices and its interlocks.

A site config is a TOML file that a technician edits. It is validated completely before
anything starts — schema, then references between sections, then every device's profile —
and every problem is reported with its exact key, so a bad config never starts half a gateway.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import Field, PrivateAttr, ValidationError, ValidationInfo, model_validator

from gateway.bus.config import Bus, Device, PollPeriods, RtuBus, TcpBus
from gateway.config.policy import ApplyPolicy
from gateway.control.alarms import Chatter
from gateway.control.loop import ControlConfig
from gateway.control.rules import Interlock, reference_problems
from gateway.control.standard import interlocks as standard_interlocks
from gateway.control.standard.interlocks import Safety
from gateway.devices.library import ProfileLibrary
from gateway.devices.profile import DeviceKind, Profile, load_profile
from gateway.errors import ConfigError, ProfileError
from gateway.metrics import MetricsConfig
from gateway.uplink.config import UplinkConfig
from gateway.uplink.reporting import reference_problems as report_reference_problems
from gateway.validation import Strict, validation_problems

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=48)]


class GatewayIdentity(Strict):
    site: Name
    id: Name


class SiteConfig(Strict):
    gateway: GatewayIdentity
    poll: PollPeriods = PollPeriods()
    control: ControlConfig = ControlConfig()
    buses: list[Bus]
    devices: list[Device]
    interlocks: list[Interlock] = Field(default_factory=list)
    safety: Safety = Safety()
    #: When an alarm counts as chattering and how long it must be quiet to clear.
    alarms: Chatter = Chatter()
    #: How a document from the fleet is proven healthy before it is kept (gateway.config).
    apply: ApplyPolicy = ApplyPolicy()
    #: The MQTT uplink to the fleet manager (gateway.uplink.config); none: runs offline.
    uplink: UplinkConfig | None = None
    #: Prometheus metrics over HTTP (gateway.metrics); none: off.
    metrics: MetricsConfig | None = None
    #: Directories of the site's own device profiles (relative: to the site file).
    profile_dirs: list[str] = Field(default_factory=list)
    #: The site's own profiles inside the document (travel with it): one table each.
    profiles: list[dict[str, Any]] = Field(default_factory=list)
    _profiles: ProfileLibrary = PrivateAttr(default_factory=ProfileLibrary)

    @model_validator(mode="after")
    def _check_references(self, info: ValidationInfo) -> Self:
        base = (info.context or {}).get("base_dir")
        self._profiles = ProfileLibrary.load(
            [Path(base or "/") / d for d in self.profile_dirs if base or Path(d).is_absolute()],
            beside=base,
            wanted=[d.profile for d in self.devices],
            inline=self.profiles,
        )
        if base is None:  # a document without a file (a pushed version): nothing to be beside
            self._profiles.problems[:0] = [
                f"profile_dirs[{i}]: {d!r} is relative, and this document has no file to be "
                "relative to: put the site's own profiles in [[profiles]] tables"
                for i, d in enumerate(self.profile_dirs)
                if not Path(d).is_absolute()
            ]
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
        profiles = {d.name: self.profile(d) for d in self.devices}
        return [*standard_interlocks.build(self.safety, profiles), *self.interlocks]

    @property
    def profile_library(self) -> ProfileLibrary:
        """The profiles this site can use: its own (profile_dirs, next to the file), shipped."""
        return self._profiles

    def profile(self, device: Device) -> Profile:
        """The profile of one of this site's devices."""
        return self._profiles.get(device.profile)

    def periods(self, device: Device) -> PollPeriods:
        """The device's poll periods: site defaults with its overrides applied."""
        overrides = {k: v for k, v in device.poll.model_dump().items() if v is not None}
        return self.poll.model_copy(update=overrides)


def _reference_problems(cfg: SiteConfig) -> list[str]:
    """Checks across sections, each message starting with its key path."""
    problems: list[str] = list(cfg.profile_library.problems)
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
        problems += _profile_problems(where, dev, cfg.profile_library)
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
            out[dev.name] = cfg.profile(dev)
        except ProfileError:
            continue
    return out


def _profile_problems(where: str, dev: Device, library: ProfileLibrary) -> list[str]:
    try:
        profile = library.get(dev.profile)
    except ProfileError as exc:
        return [f"{where}.profile: {exc}"]
    if dev.sunspec_base is not None and profile.sunspec is None:
        return [f"{where}.sunspec_base: profile {dev.profile} is not a SunSpec device"]
    if dev.watchdog_timeout_s is not None and profile.watchdog is None:
        return [f"{where}.watchdog_timeout_s: profile {dev.profile} has no watchdog"]
    timeout = profile.watchdog.timeout if profile.watchdog is not None else None
    if dev.watchdog_timeout_s is not None and timeout and not profile.point(timeout).writable:
        return [
            f"{where}.watchdog_timeout_s: {dev.profile} does not take its timeout over Modbus "
            f"({timeout} is read-only): set it when commissioning the device"
        ]
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


def parse_site(text: str, source: str, base_dir: Path | None = None) -> SiteConfig:
    """Validate a site config completely; raise :class:`ConfigError` listing every problem."""
    data = _toml(text, source)
    problems = [*_not_finite(data, ""), *_too_large(data)]
    if problems:
        raise ConfigError(source, problems)
    try:
        # strict, as JSON: "5" is no number and "yes" no boolean, while names still read as
        # the enumerations they stand for (a technician's string in a number is a mistake)
        return SiteConfig.model_validate_json(
            json.dumps(data), strict=True, context={"base_dir": base_dir}
        )
    except ValidationError as exc:
        problems = []
        for line in validation_problems(exc):
            problems.extend(_named(line, data) for line in line.split("\n"))
        raise ConfigError(source, problems) from None


def load_site(path: str | Path) -> SiteConfig:
    """The site file at ``path``, validated: anything that is not a regular file (a FIFO, a
    device such as /dev/zero, a directory) and any file over :data:`MAX_SITE_BYTES` is
    refused before it is read, and text that is not UTF-8 is named with its line."""
    path = Path(path)
    return parse_site(read_site_text(path), str(path), path.parent)


#: The largest site file read (a real one is a few kB; profiles inline make it tens).
MAX_SITE_BYTES = 1024 * 1024
#: The most devices a site may have (a gateway polls them all every cycle).
MAX_DEVICES = 250
#: How deep a site file's arrays and tables may nest (a real one: four).
MAX_DEPTH = 32


def read_site_text(path: Path) -> str:
    """A site file's text, or :class:`ConfigError` saying why not (see :func:`load_site`)."""
    source = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise ConfigError(source, [f"cannot read the file: {exc.strerror}"]) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        what = "a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO or device"
        raise ConfigError(source, [f"not a regular file ({what}): expected a TOML file"])
    with os.fdopen(fd, "rb") as file:
        if info.st_size > MAX_SITE_BYTES:
            raise ConfigError(
                source, [f"{info.st_size} bytes: a site file is at most {MAX_SITE_BYTES} bytes"]
            )
        data = file.read(MAX_SITE_BYTES + 1)
    if len(data) > MAX_SITE_BYTES:  # grew while it was read
        raise ConfigError(source, [f"over {MAX_SITE_BYTES} bytes: too large for a site file"])
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise ConfigError(source, ["line 1: UTF-16 text: save the file as UTF-8"])
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise ConfigError(source, [f"line {line}: a NUL byte: this is not a text file"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(source, [f"line {line}: not UTF-8 text (byte {exc.start})"]) from None


def _toml(text: str, source: str) -> dict[str, Any]:
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise ConfigError(source, [f"line {line}: a NUL character: this is not a text file"])
    depth = _depth(text)
    if depth > MAX_DEPTH:
        raise ConfigError(source, [f"arrays or tables nested {depth} deep; at most {MAX_DEPTH}"])
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    except RecursionError:
        raise ConfigError(source, [f"nested deeper than {MAX_DEPTH} levels"]) from None


def _depth(text: str) -> int:
    """How deep brackets and braces nest, strings and comments aside (an upper bound
    for the TOML parser's recursion)."""
    depth = deepest = 0
    quote = ""
    i = 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\" and quote == '"':
                i += 1
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#":
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
        i += 1
    return deepest


def _not_finite(value: Any, where: str) -> list[str]:
    """``poll.fast_ms: nan is not a finite number`` for each NaN and infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{where}: {value} is not a finite number"]
    if isinstance(value, dict):
        return [
            p
            for key, item in value.items()
            for p in _not_finite(item, f"{where}.{key}" if where else str(key))
        ]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _not_finite(item, f"{where}[{i}]")]
    return []


def _too_large(data: dict[str, Any]) -> list[str]:
    devices = data.get("devices")
    if isinstance(devices, list) and len(devices) > MAX_DEVICES:
        return [f"devices: {len(devices)} devices; a site has at most {MAX_DEVICES}"]
    return []


_INDEXED = re.compile(r"\b(devices|buses|interlocks)\[(\d+)\]")


def _named(line: str, data: dict[str, Any]) -> str:
    """``devices[3].unit_id: …`` → ``devices[charger-3].unit_id: …``: each entry by the name
    the technician gave it, where it has one."""

    def name(found: re.Match[str]) -> str:
        entries = data.get(found[1])
        index = int(found[2])
        if not isinstance(entries, list) or index >= len(entries):
            return found[0]
        entry = entries[index]
        given = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(given, str) or not given or len(given) > 48:
            return found[0]
        return f"{found[1]}[{given}]"

    return _INDEXED.sub(name, line)


def device_profile(device: Device) -> Profile:
    """The shipped profile of a device (a site's own profiles: :meth:`SiteConfig.profile`)."""
    return load_profile(device.profile)

"""What the status display shows of a running gateway, copied out of it on the event loop.

:func:`collect` takes a :class:`StatusSnapshot`: every device with its health, the quality of
its data and its key points (by their labels), every bus, the active alarms, the control loop.
It is plain frozen data, so it can be laid out in another process (:mod:`gateway.cli.screen`)
or logged (:mod:`gateway.cli.status`).

A device's health comes from data alone, never from per-model code (:func:`device_health`):

* **offline** — the process image marks it so (it stopped answering);
* **fault** — a critical or major alarm stands on it: a locked-out charger is a fault while
  its data is fresh;
* **warning** — a minor alarm on it, or some of its points stale or bad;
* **held** — an active interlock holds a protective action on it (:func:`holding`): a
  write at protection priority or above, or an inhibit of one of its functions;
* **starting** — not read yet (a SunSpec device before its discovery);
* **ok**.

The quality of its data is kept apart (:func:`data_summary`): a device can be ok with stale
telemetry, and faulty with every point fresh.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from gateway.control.actuator import PRIORITY_PROTECTION
from gateway.control.alarms import AlarmEvent, Severity
from gateway.control.rules import InhibitAction, WriteAction
from gateway.devices.codec import Value
from gateway.devices.profile import Point, PointType
from gateway.image import Quality, Sample

if TYPE_CHECKING:  # the screen process unpickles snapshots without the runtime
    from gateway.control.engine import RuleRuntime
    from gateway.runtime import Gateway


class Health(StrEnum):
    """A device's health, worst first."""

    OFFLINE = "offline"
    FAULT = "fault"
    WARNING = "warning"
    HELD = "held"
    STARTING = "starting"
    OK = "ok"

    @property
    def rank(self) -> int:
        return list(Health).index(self)


@dataclass(frozen=True, slots=True)
class KeyPoint:
    label: str
    text: str
    quality: Quality


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    name: str
    bus: str
    unit: int
    health: Health
    why: str  # what makes it so, in a few words ("" when ok)
    data: str  # the quality of its points: "good", "3 stale", "offline", "-" (none yet)
    data_quality: Quality
    key_points: tuple[KeyPoint, ...]
    tx: int
    p50_ms: float | None
    p99_ms: float | None
    timeouts: int
    crc: int


@dataclass(frozen=True, slots=True)
class BusStatus:
    name: str
    tx_per_s: float
    utilisation: float
    p50_ms: float | None
    p99_ms: float | None
    timeouts: int
    crc: int
    retries: int


@dataclass(frozen=True)
class StatusSnapshot:
    """A copy of what is shown, taken on the event loop and laid out anywhere."""

    title: str
    devices: tuple[DeviceStatus, ...]
    buses: tuple[BusStatus, ...]
    alarms: tuple[AlarmEvent, ...]  # as a person should see them, most severe first
    suppressed: dict[str, int]  # alarm key -> how many alarms it suppresses
    loop: str
    loop_healthy: bool
    note: str = ""  # the latest log message, while the screen hides the log
    at: float = 0.0  # wall clock


def device_health(
    *,
    offline: bool,
    qualities: Sequence[Quality],
    alarms: Sequence[AlarmEvent],
    held_by: Sequence[str],
) -> tuple[Health, str]:
    """A device's health and why, from its comm state, its points' qualities, the alarms on
    it (most severe first) and the interlocks holding protective actions on it."""
    if offline:
        return Health.OFFLINE, "not answering"
    serious = [a for a in alarms if a.severity in (Severity.CRITICAL, Severity.MAJOR)]
    if serious:
        return Health.FAULT, serious[0].message
    minor = [a for a in alarms if a.severity is Severity.MINOR]
    if minor:
        return Health.WARNING, minor[0].message
    unread = sum(q in (Quality.STALE, Quality.BAD) for q in qualities)
    if unread:
        return Health.WARNING, f"{unread} point(s) stale or bad"
    if held_by:
        return Health.HELD, f"held by {', '.join(held_by)}"
    if not qualities or all(q is Quality.OFFLINE for q in qualities):
        return Health.STARTING, "not read yet"
    return Health.OK, ""


def holding(rules: Iterable[RuleRuntime]) -> dict[str, list[str]]:
    """Device -> the active interlocks that hold a protective action on it: a write at
    protection priority or above (life safety), or an inhibit of one of its functions."""
    held: dict[str, list[str]] = {}
    for rule in rules:
        if not rule.active:
            continue
        for action in rule.spec.actions:
            if isinstance(action, WriteAction) and action.priority <= PRIORITY_PROTECTION:
                device = action.write.split(".", 1)[0]
            elif isinstance(action, InhibitAction):
                device = action.inhibit.split(".", 1)[0]
            else:
                continue
            names = held.setdefault(device, [])
            if rule.name not in names:
                names.append(rule.name)
    return held


def data_summary(qualities: Sequence[Quality]) -> tuple[str, Quality]:
    """The quality of a device's points in a word or two: the worst (bad, stale, offline)
    and how many points have it, or "good"."""
    if not qualities:
        return "-", Quality.OFFLINE
    counts = collections.Counter(qualities)
    for quality in (Quality.BAD, Quality.STALE, Quality.OFFLINE):
        n = counts[quality]
        if n:
            return (quality.value if n == len(qualities) else f"{n} {quality.value}"), quality
    return "good", Quality.GOOD


def format_value(point: Point, value: Value) -> str:
    """A value as a technician reads it: enum labels, set bit names, units."""
    if value is None:
        return "n/a"
    if point.type is PointType.ENUM and point.enum and isinstance(value, int):
        return point.enum.get(value, str(value))
    if point.type is PointType.BITFIELD and point.bits is not None and isinstance(value, int):
        names = [name for bit, name in sorted(point.bits.items()) if value >> bit & 1]
        return ",".join(names) or "-"
    text = f"{value:.1f}" if isinstance(value, float) else str(value)
    return f"{text} {point.unit}" if point.unit and point.unit != "floor" else text


def _short_value(point: Point, value: Value) -> str:
    """:func:`format_value`, with a bitfield of more than three set bits as a count."""
    if point.type is PointType.BITFIELD and point.bits is not None and isinstance(value, int):
        n = sum(value >> bit & 1 for bit in point.bits)
        if n > 3:
            return f"{n}/{len(point.bits)}"
    return format_value(point, value)


def collect(gw: Gateway, note: str = "") -> StatusSnapshot:
    """Copy what the screen or the log shows out of the running gateway."""
    qualities: dict[str, list[Quality]] = collections.defaultdict(list)
    for device, _, sample in gw.image.points():
        qualities[device].append(sample.quality)
    alarms = tuple(gw.alarms.by_severity())
    suppressed = collections.Counter(
        e.suppressed_by for e in gw.alarms.active.values() if e.suppressed_by
    )
    held = holding(gw.engine.rules.values())
    devices = tuple(
        _device(gw, name, qualities[name], [a for a in alarms if a.device == name], held)
        for name in gw.pollers
    )
    loop, healthy = _loop(gw)
    return StatusSnapshot(
        f"{gw.site.gateway.site} / {gw.site.gateway.id}",
        devices,
        _buses(gw),
        alarms,
        dict(suppressed),
        loop,
        healthy,
        note,
        time.time(),
    )


def _device(
    gw: Gateway,
    name: str,
    qualities: list[Quality],
    alarms: list[AlarmEvent],
    held: dict[str, list[str]],
) -> DeviceStatus:
    poller = gw.pollers[name]
    health, why = device_health(
        offline=gw.image.offline(name),
        qualities=qualities if poller.ready else [],
        alarms=alarms,
        held_by=held.get(name, []),
    )
    data, data_quality = data_summary(qualities)
    st, points = poller.stats, poller.profile.point_map
    return DeviceStatus(
        name,
        poller.device.bus,
        poller.unit_id,
        health,
        why,
        data,
        data_quality,
        tuple(key_point(points[p], gw.image.find(name, p)) for p in poller.profile.key_points),
        st.transactions,
        _ms(st.latency.p50),
        _ms(st.latency.p99),
        st.timeouts,
        st.crc_errors,
    )


def key_point(point: Point, sample: Sample | None) -> KeyPoint:
    """A key point as shown: its label, its value, its quality (None: not declared yet)."""
    if sample is None:
        return KeyPoint(point.display_name, "n/a", Quality.OFFLINE)
    return KeyPoint(point.display_name, _short_value(point, sample.value), sample.quality)


def _buses(gw: Gateway) -> tuple[BusStatus, ...]:
    now = time.monotonic()
    return tuple(
        BusStatus(
            name,
            s.stats.transactions_per_s(now),
            s.stats.utilisation(now),
            _ms(s.stats.latency.p50),
            _ms(s.stats.latency.p99),
            s.stats.timeouts,
            s.stats.crc_errors,
            s.stats.retries,
        )
        for name, s in gw.schedulers.items()
    )


def _loop(gw: Gateway) -> tuple[str, bool]:
    snap = gw.supervisor.loop.snapshot()
    if not gw.supervisor.healthy():
        return "control loop UNHEALTHY: heartbeats stopped", False
    p99, worst = (snap[k] or 0.0 for k in ("lateness_p99_ms", "lateness_max_ms"))
    return f"loop {snap['period_ms']:.0f} ms: late p99 {p99:.1f}, max {worst:.1f} ms", True


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000

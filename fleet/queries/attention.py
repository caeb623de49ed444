"""What needs a person, per site: the worst open alarm, gateways offline or never connected,
devices offline, and devices that cannot do their job (elevators out of service, chargers
unavailable, PV curtailed: a status point in one of its model's ``alarm_values``); sites in
the order a person should look at them. A handful of set-based queries for any fleet size.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.catalog import Shape, catalog
from fleet.models import Alarm, Device, Gateway, LatestValue, Site, utcnow
from fleet.queries.alarms import SEVERITIES, shelved
from gateway.devices.profile import DeviceKind


@dataclass(frozen=True)
class WorstAlarm:
    id: int
    severity: str
    gateway: str
    device: str | None
    message: str
    raised_at: datetime


@dataclass
class SiteAttention:
    """One site as the overview shows it (a plain dataclass: the overview fills one per site
    and counts into it, for every request)."""

    name: str
    title: str
    gateways: int = 0
    gateways_offline: list[str] = field(default_factory=list)
    #: gateways registered that never sent a message (they need their [uplink] table)
    gateways_never_connected: list[str] = field(default_factory=list)
    devices: int = 0
    devices_offline: list[str] = field(default_factory=list)
    open_alarms: int = 0
    worst_alarm: WorstAlarm | None = None
    #: devices of each kind in an alarm or out-of-service state, e.g. {"elevator": ["elv-1"]}
    out_of_service: dict[DeviceKind, list[str]] = field(default_factory=dict)

    @property
    def needs_a_person(self) -> bool:
        return bool(
            self.worst_alarm
            or self.gateways_offline
            or self.gateways_never_connected
            or self.devices_offline
            or any(self.out_of_service.values())
        )

    def urgency(self) -> tuple[int, int, int, str]:
        """Sort key: most severe alarm first, then most things down, then by name."""
        severity = SEVERITIES.index(self.worst_alarm.severity) if self.worst_alarm else 9
        down = (
            len(self.gateways_offline)
            + len(self.devices_offline)
            + sum(len(v) for v in self.out_of_service.values())
        )
        never = len(self.gateways_never_connected)
        return (severity, -down, -never, self.name)


def _status_points() -> dict[str, dict[str, tuple[Shape, frozenset[int]]]]:
    """Per model, the points whose alarm values make a device out of service."""
    return {
        model: {
            p.name: (p.shape, frozenset(p.alarm_values))
            for p in info.points.values()
            if p.alarm_values
        }
        for model, info in catalog().items()
    }


def in_alarm(shape: Shape, alarm_values: frozenset[int], value: object) -> bool:
    """Whether a reported value is one of its point's alarm states."""
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int | float) or not float(value).is_integer():
        return False
    number = int(value)
    if shape is Shape.BITS:
        return any(number >> bit & 1 for bit in alarm_values)
    return number in alarm_values


async def attention(session: AsyncSession) -> list[SiteAttention]:
    """Every site, those that need a person first (see :meth:`SiteAttention.urgency`)."""
    sites = {
        site_id: SiteAttention(name=name, title=title)
        for site_id, name, title in await session.execute(select(Site.id, Site.name, Site.title))
    }
    gateway_site: dict[int, int] = {}
    gateway_name: dict[int, str] = {}
    rows = select(Gateway.id, Gateway.site_id, Gateway.name, Gateway.online, Gateway.last_seen)
    for gw_id, site_id, name, online, last_seen in await session.execute(rows):
        site = sites[site_id]
        gateway_site[gw_id], gateway_name[gw_id] = site_id, name
        site.gateways += 1
        if last_seen is None:
            site.gateways_never_connected.append(name)
        elif not online:
            site.gateways_offline.append(name)
    await _alarms(session, sites, gateway_site, gateway_name)
    await _devices(session, sites, gateway_site)
    for site in sites.values():
        site.gateways_offline.sort()
        site.gateways_never_connected.sort()
        site.devices_offline.sort()
    return sorted(sites.values(), key=SiteAttention.urgency)


async def _alarms(
    session: AsyncSession,
    sites: dict[int, SiteAttention],
    gateway_site: dict[int, int],
    gateway_name: dict[int, str],
) -> None:
    """Open alarms per site and the worst: most severe, then the oldest; an alarm that only
    follows from another (suppressed) is not the one to name, and a shelved one is left out
    (a person put it aside on purpose: it comes back when its shelf runs out)."""
    is_open = and_(Alarm.cleared_at.is_(None), ~shelved(utcnow()))
    counts = select(Alarm.gateway_id, func.count()).where(is_open).group_by(Alarm.gateway_id)
    for gw_id, n in await session.execute(counts):
        sites[gateway_site[gw_id]].open_alarms += n
    rank = case({s: i for i, s in enumerate(SEVERITIES)}, value=Alarm.severity, else_=99)
    ranked = (
        select(
            Alarm.id, Alarm.gateway_id, Alarm.severity, Alarm.device, Alarm.message,
            Alarm.raised_at,
            func.row_number()
            .over(partition_by=Gateway.site_id, order_by=(rank, Alarm.raised_at, Alarm.id))
            .label("n"),
        )
        .join(Gateway, Alarm.gateway_id == Gateway.id)
        .where(is_open, Alarm.suppressed_by.is_(None))
        .subquery()
    )  # fmt: skip
    worst = select(ranked).where(ranked.c.n == 1)
    for alarm_id, gw_id, severity, device, message, raised_at, _ in await session.execute(worst):
        sites[gateway_site[gw_id]].worst_alarm = WorstAlarm(
            id=alarm_id, severity=severity, gateway=gateway_name[gw_id], device=device,
            message=message, raised_at=raised_at,
        )  # fmt: skip


async def _devices(
    session: AsyncSession, sites: dict[int, SiteAttention], gateway_site: dict[int, int]
) -> None:
    """Devices per site, those offline (a point marked offline by its gateway), and those in
    an alarm or out-of-service state, by kind: one pass over the latest values."""
    per_site = (
        select(Gateway.site_id, func.count(Device.id))
        .join(Device, Device.gateway_id == Gateway.id)
        .group_by(Gateway.site_id)
    )
    for site_id, n in await session.execute(per_site):
        sites[site_id].devices = n
    status = _status_points()
    names = sorted({point for points in status.values() for point in points})
    worth_a_look = (
        select(
            Device.gateway_id, Device.name, Device.model, LatestValue.point,
            LatestValue.value, LatestValue.quality,
        )
        .join(LatestValue, LatestValue.device_id == Device.id)
        .where(or_(LatestValue.quality == "offline", LatestValue.point.in_(names)))
    )  # fmt: skip
    kinds = {model: info.kind for model, info in catalog().items()}
    offline: dict[int, set[tuple[str, int]]] = defaultdict(set)  # site id → (device, gateway)
    down: dict[int, dict[tuple[str, int], str]] = defaultdict(dict)  # … → model
    for gw_id, name, model, point, value, quality in await session.execute(worth_a_look):
        site_id = gateway_site[gw_id]
        if quality == "offline":
            offline[site_id].add((name, gw_id))
            continue
        found = status.get(model, {}).get(point)
        if found is not None and in_alarm(found[0], found[1], value):
            down[site_id][name, gw_id] = model
    for site_id, devices in offline.items():
        sites[site_id].devices_offline = sorted(name for name, _ in devices)
    for site_id, models in down.items():
        by_kind = sites[site_id].out_of_service
        for device in sorted(models):
            if device not in offline[site_id]:
                by_kind.setdefault(kinds[models[device]], []).append(device[0])

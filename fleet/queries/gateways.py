"""One line per gateway, as the overview and the site page show it: up or down, when last
heard, its version, its open alarms by severity, unacknowledged alarms, outbox depth (from
its last health report) and how many devices it has."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVarTuple

from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.models import Alarm, Device, Gateway, Site, utcnow
from fleet.queries.alarms import shelved


class AlarmCounts(BaseModel):
    critical: int = 0
    major: int = 0
    minor: int = 0
    info: int = 0


class GatewayState(BaseModel):
    """What the overview and the site page both show of a gateway."""

    site: str
    name: str
    online: bool
    last_seen: datetime | None
    version: str
    open_alarms: AlarmCounts
    unacked_alarms: int
    outbox_depth: int | None


class GatewaySummary(GatewayState):
    devices: int  # how many


def _outbox_depth(health: dict[str, Any] | None) -> int | None:
    depth = None if health is None else health.get("outbox_depth")
    return depth if isinstance(depth, int) else None


@dataclass(frozen=True)
class GatewayLine:
    """A gateway's summary with what the site page adds: its id and last health report."""

    id: int
    health: dict[str, Any] | None
    health_at: datetime | None
    summary: GatewaySummary


async def summaries(session: AsyncSession, site: str | None = None) -> list[GatewayLine]:
    """Every gateway (of ``site``, or all), ordered by site and name, with its summary.
    Columns, not ORM objects: the overview builds 1000 of these per request."""
    rows = select(
        Gateway.id, Site.name, Gateway.name, Gateway.online, Gateway.last_seen,
        Gateway.version, Gateway.health, Gateway.health_at,
    ).join(Site).order_by(Site.name, Gateway.name)  # fmt: skip
    gateways = (await session.execute(_of_site(rows, site))).all()
    open_counts, unacked, devices = await _counts(session, site)
    return [
        GatewayLine(
            id=gw_id,
            health=health,
            health_at=health_at,
            summary=GatewaySummary(
                site=site_name,
                name=name,
                online=online,
                last_seen=last_seen,
                version=version,
                open_alarms=AlarmCounts(**open_counts[gw_id]),
                unacked_alarms=unacked.get(gw_id, 0),
                outbox_depth=_outbox_depth(health),
                devices=devices.get(gw_id, 0),
            ),
        )
        for gw_id, site_name, name, online, last_seen, version, health, health_at in gateways
    ]


Ts = TypeVarTuple("Ts")


def _of_site(query: Select[*Ts], site: str | None) -> Select[*Ts]:
    """``query`` (which mentions Gateway) limited to the gateways of ``site`` if given."""
    if site is None:
        return query
    return query.where(
        Gateway.site_id == select(Site.id).where(Site.name == site).scalar_subquery()
    )


async def _counts(
    session: AsyncSession, site: str | None
) -> tuple[dict[int, dict[str, int]], dict[int, int], dict[int, int]]:
    """Open alarms by severity, unacknowledged alarms and devices, per gateway id; shelved
    alarms are left out, as from the alarm list."""
    open_counts: dict[int, dict[str, int]] = defaultdict(dict)
    unshelved = ~shelved(utcnow())
    by_severity = (
        select(Alarm.gateway_id, Alarm.severity, func.count())
        .join(Gateway, Alarm.gateway_id == Gateway.id)
        .where(Alarm.cleared_at.is_(None), unshelved)
        .group_by(Alarm.gateway_id, Alarm.severity)
    )
    for gateway_id, severity, n in await session.execute(_of_site(by_severity, site)):
        open_counts[gateway_id][severity] = n
    unacked = (
        select(Alarm.gateway_id, func.count())
        .join(Gateway, Alarm.gateway_id == Gateway.id)
        .where(Alarm.acked_at.is_(None), unshelved)
        .group_by(Alarm.gateway_id)
    )
    devices = (
        select(Device.gateway_id, func.count())
        .join(Gateway, Device.gateway_id == Gateway.id)
        .group_by(Device.gateway_id)
    )
    return (
        open_counts,
        dict((await session.execute(_of_site(unacked, site))).all()),
        dict((await session.execute(_of_site(devices, site))).all()),
    )

"""The alarm list: open, unacknowledged or all alarms, newest first; open ones by severity
(critical, major, minor, info) first, newest first within a severity."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Select, case, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.models import Alarm, Gateway, Site

SEVERITIES = ("critical", "major", "minor", "info")


class AlarmState(StrEnum):
    OPEN = "open"  # not cleared by the gateway
    UNACKED = "unacked"  # not acknowledged by a person (cleared or not)
    ALL = "all"


class AlarmView(BaseModel):
    id: int
    site: str
    gateway: str
    key: str
    severity: str
    interlock: str
    device: str | None
    message: str
    values: dict[str, Any]
    raised_at: datetime
    cleared_at: datetime | None
    acked_at: datetime | None
    acked_by: str | None
    #: The key of the alarm of the same gateway whose cause this one only follows from.
    suppressed_by: str | None = None
    #: How often a chattering alarm came back while held.
    count: int = 1


def view(alarm: Alarm, site: str, gateway: str) -> AlarmView:
    return AlarmView(
        id=alarm.id, site=site, gateway=gateway, key=alarm.key, severity=alarm.severity,
        interlock=alarm.interlock, device=alarm.device, message=alarm.message,
        values=alarm.values, raised_at=alarm.raised_at, cleared_at=alarm.cleared_at,
        acked_at=alarm.acked_at, acked_by=alarm.acked_by, suppressed_by=alarm.suppressed_by,
        count=alarm.count,
    )  # fmt: skip


def _with_names() -> Select[Alarm, str, str]:
    return (
        select(Alarm, Site.name, Gateway.name)
        .join(Gateway, Alarm.gateway_id == Gateway.id)
        .join(Site, Gateway.site_id == Site.id)
    )


async def alarms(
    session: AsyncSession, state: AlarmState, site: str | None, limit: int
) -> list[AlarmView]:
    query = _with_names()
    if site is not None:
        query = query.where(Site.name == site)
    if state is AlarmState.OPEN:
        rank = case({s: i for i, s in enumerate(SEVERITIES)}, value=Alarm.severity, else_=99)
        query = query.where(Alarm.cleared_at.is_(None)).order_by(rank)
    elif state is AlarmState.UNACKED:
        query = query.where(Alarm.acked_at.is_(None))
    query = query.order_by(Alarm.raised_at.desc(), Alarm.id.desc()).limit(limit)
    return [view(a, s, g) for a, s, g in (await session.execute(query))]


async def alarm(session: AsyncSession, alarm_id: int) -> tuple[Alarm, str, str] | None:
    """The alarm row (to change it) with its site and gateway names, or None."""
    row = (await session.execute(_with_names().where(Alarm.id == alarm_id))).one_or_none()
    return None if row is None else (row[0], row[1], row[2])

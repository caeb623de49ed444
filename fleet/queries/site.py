"""One site in detail: each gateway's summary with its last health report, its devices and
the latest value of every point."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.models import Device, LatestValue
from fleet.queries.gateways import GatewayState, summaries
from fleet.registry import find_site


class PointValue(BaseModel):
    value: Any
    quality: str
    at: datetime


class DeviceView(BaseModel):
    name: str
    model: str
    last_seen: datetime | None
    points: dict[str, PointValue]


class GatewayDetail(GatewayState):
    health: dict[str, Any] | None  # the last wire.Health report
    health_at: datetime | None
    devices: list[DeviceView]


class SiteDetail(BaseModel):
    name: str
    title: str
    gateways: list[GatewayDetail]


async def site_detail(session: AsyncSession, name: str) -> SiteDetail | None:
    """None when there is no such site."""
    site = await find_site(session, name)
    if site is None:
        return None
    lines = await summaries(session, name)
    devices = (  # columns, not ORM objects: a site page reads hundreds of values
        await session.execute(
            select(Device.id, Device.gateway_id, Device.name, Device.model, Device.last_seen)
            .where(Device.gateway_id.in_([line.id for line in lines]))
            .order_by(Device.name)
        )
    ).all()
    points: dict[int, dict[str, PointValue]] = defaultdict(dict)
    values = await session.execute(
        select(
            LatestValue.device_id, LatestValue.point, LatestValue.value, LatestValue.quality,
            LatestValue.at,
        )
        .where(LatestValue.device_id.in_([d.id for d in devices]))
        .order_by(LatestValue.point)
    )  # fmt: skip
    for device_id, point, value, quality, at in values:
        points[device_id][point] = PointValue(value=value, quality=quality, at=at)
    by_gateway: dict[int, list[DeviceView]] = defaultdict(list)
    for d in devices:
        by_gateway[d.gateway_id].append(
            DeviceView(name=d.name, model=d.model, last_seen=d.last_seen, points=points[d.id])
        )
    return SiteDetail(
        name=site.name,
        title=site.title,
        gateways=[
            GatewayDetail(
                **line.summary.model_dump(exclude={"devices"}),
                health=line.health,
                health_at=line.health_at,
                devices=by_gateway[line.id],
            )
            for line in lines
        ],
    )

"""The one-screen health of the whole fleet: every site with every gateway's summary."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.models import Gateway, Site, utcnow
from fleet.queries.gateways import GatewaySummary, summaries


class SiteOverview(BaseModel):
    name: str
    title: str
    gateways: list[GatewaySummary]


class Overview(BaseModel):
    generated_at: datetime
    sites: list[SiteOverview]


class SiteListing(BaseModel):
    name: str
    title: str
    gateways: int


async def overview(session: AsyncSession) -> Overview:
    """Sites by name (those without gateways too), gateways by name within each."""
    generated_at = utcnow()
    by_site: dict[str, list[GatewaySummary]] = defaultdict(list)
    for line in await summaries(session):
        by_site[line.summary.site].append(line.summary)
    sites = await session.execute(select(Site.name, Site.title).order_by(Site.name))
    return Overview(
        generated_at=generated_at,
        sites=[
            SiteOverview(name=name, title=title, gateways=by_site[name]) for name, title in sites
        ],
    )


async def site_listing(session: AsyncSession) -> list[SiteListing]:
    rows = await session.execute(
        select(Site.name, Site.title, func.count(Gateway.id))
        .outerjoin(Gateway, Gateway.site_id == Site.id)
        .group_by(Site.id, Site.name, Site.title)
        .order_by(Site.name)
    )
    return [SiteListing(name=n, title=t, gateways=g) for n, t, g in rows]

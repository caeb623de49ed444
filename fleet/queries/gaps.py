"""Batches lost for good, per gateway of a site: the ranges of sequence numbers the fleet
asked a gateway for (gap repair, :mod:`fleet.ingest.repair`) and the gateway no longer kept,
so the site page can say what is missing from the history and since when."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.models import Gap, Gateway, Site

#: the most recent lost ranges shown per gateway
PER_GATEWAY = 5


@dataclass(frozen=True)
class LostGap:
    kind: str  # "telemetry" or "events"
    first: int
    last: int
    lost_at: datetime


@dataclass(frozen=True)
class LostGaps:
    recent: list[LostGap]  # the most recent first, at most PER_GATEWAY
    total: int  # how many ranges were lost in all


async def lost_gaps(session: AsyncSession, site: str) -> dict[str, LostGaps]:
    """The lost ranges of each gateway of ``site`` that lost any, by gateway name."""
    rows = await session.execute(
        select(Gateway.name, Gap.kind, Gap.first, Gap.last, Gap.lost_at)
        .join(Gateway, Gap.gateway_id == Gateway.id)
        .join(Site, Gateway.site_id == Site.id)
        .where(Site.name == site, Gap.lost_at.is_not(None))
        .order_by(Gateway.name, Gap.lost_at.desc(), Gap.first.desc())
    )
    found: dict[str, list[LostGap]] = defaultdict(list)
    for gateway, kind, first, last, lost_at in rows:
        if lost_at is not None:  # the query's condition, for the type checker
            found[gateway].append(LostGap(kind, first, last, lost_at))
    return {gw: LostGaps(gaps[:PER_GATEWAY], len(gaps)) for gw, gaps in found.items()}

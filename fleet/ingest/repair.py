"""Gap repair, the fleet's side: ask gateways for the batches a gap is missing, and record
what a gateway no longer has as lost.

The broker's acknowledgement to a gateway is not the fleet's (a broker may drop what it
queued), so an open gap (:mod:`fleet.ingest.sequences`) is not left to chance: every
:data:`ASK_EVERY_S` :class:`GapRepair` sends each gateway with open gaps a ``repair/request``
(:mod:`gateway.wire.repair`) for them, a gap at most once every :data:`ASK_AGAIN_S`. The
gateway publishes the batches it still keeps again (ingest stores each once and the gap
closes) and answers with a ``repair/report`` whose lost ranges :func:`report_route` closes
as lost (``lost_at``): they are shown, with their range, in ``GET /api/ingest``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.core.outbound import Outbound
from fleet.ingest.ingest import GatewayRef
from fleet.models import Gap, Gateway, Site, utcnow
from gateway import wire
from gateway.wire.repair import MAX_BATCHES, MAX_RANGES, RepairReport, RepairRequest

log = logging.getLogger(__name__)

ASK_EVERY_S = 15.0
ASK_AGAIN_S = 60.0


async def report_route(session: AsyncSession, gateway: GatewayRef, message: wire.Payload) -> None:
    """A gateway's answer: its lost ranges close the open gaps they cover, as lost (a gap
    partly lost is split: what may still come stays open)."""
    assert isinstance(message, RepairReport)
    now = utcnow()
    for first, last in message.lost:
        gaps = await session.scalars(
            select(Gap).where(
                Gap.gateway_id == gateway.id,
                Gap.kind == message.kind,
                Gap.closed_at.is_(None),
                Gap.first <= last,
                Gap.last >= first,
            )
        )
        for gap in list(gaps):
            lost_first, lost_last = max(gap.first, first), min(gap.last, last)
            for keep_first, keep_last in ((gap.first, lost_first - 1), (lost_last + 1, gap.last)):
                if keep_first <= keep_last:
                    session.add(
                        Gap(
                            gateway_id=gap.gateway_id,
                            kind=gap.kind,
                            epoch=gap.epoch,
                            first=keep_first,
                            last=keep_last,
                            detected_at=gap.detected_at,
                            asked_at=gap.asked_at,
                        )
                    )
            gap.first, gap.last = lost_first, lost_last
            gap.closed_at = gap.lost_at = now
            log.warning(
                "gateway %s/%s: %s batches %d-%d are lost (no longer kept by the gateway)",
                gateway.site,
                gateway.name,
                gap.kind,
                lost_first,
                lost_last,
            )


class GapRepair:
    """Asks gateways for what their open gaps are missing (see the module's docstring)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbound: Callable[[], Outbound | None],
        *,
        every_s: float = ASK_EVERY_S,
        again_s: float = ASK_AGAIN_S,
    ) -> None:
        self.sessions = sessions
        self.outbound = outbound
        self.every_s = every_s
        self.again_s = again_s
        self._ids = itertools.count(int(time.time() * 1000))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await self.ask()
            except Exception:  # the database away: asked again next round
                log.exception("gap repair: could not ask for missing batches")

    async def ask(self) -> int:
        """One round: a request per gateway and kind with open gaps not asked for lately;
        how many requests were sent."""
        outbound = self.outbound()
        if outbound is None:
            return 0
        now = utcnow()
        due: dict[tuple[str, str, str], list[Gap]] = {}
        async with self.sessions() as session:
            rows = await session.execute(
                select(Gap, Site.name, Gateway.name)
                .join(Gateway, Gap.gateway_id == Gateway.id)
                .join(Site, Gateway.site_id == Site.id)
                .where(Gap.closed_at.is_(None))
                .where((Gap.asked_at.is_(None)) | (Gap.asked_at < now - _seconds(self.again_s)))
                .order_by(Gap.gateway_id, Gap.kind, Gap.first)
            )
            for gap, site, name in rows:
                due.setdefault((site, name, gap.kind), []).append(gap)
            sent = 0
            for (site, name, kind), gaps in due.items():
                ranges, total = [], 0
                for gap in gaps[:MAX_RANGES]:
                    size = min(gap.last - gap.first + 1, MAX_BATCHES - total)
                    if size <= 0:
                        break
                    ranges.append((gap.first, gap.first + size - 1))
                    total += size
                    gap.asked_at = now
                request = RepairRequest(id=next(self._ids), kind=kind, ranges=ranges)
                if await outbound.send(site, name, wire.Kind.REPAIR_REQUEST, wire.encode(request)):
                    sent += 1
            await session.commit()
        return sent


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


async def gaps(session: AsyncSession, limit: int = 100) -> dict[str, list[dict[str, object]]]:
    """The open gaps and the most recently lost ones, each with its gateway and range."""

    async def listed(*where: object, order: object) -> list[dict[str, object]]:
        rows = await session.execute(
            select(Gap, Site.name, Gateway.name)
            .join(Gateway, Gap.gateway_id == Gateway.id)
            .join(Site, Gateway.site_id == Site.id)
            .where(*where)  # type: ignore[arg-type]
            .order_by(order)  # type: ignore[arg-type]
            .limit(limit)
        )
        return [
            {
                "site": site,
                "gateway": name,
                "kind": gap.kind,
                "first": gap.first,
                "last": gap.last,
                "detected_at": gap.detected_at.isoformat(),
                "lost_at": None if gap.lost_at is None else gap.lost_at.isoformat(),
            }
            for gap, site, name in rows
        ]

    return {
        "open": await listed(Gap.closed_at.is_(None), order=Gap.detected_at),
        "lost": await listed(Gap.lost_at.is_not(None), order=Gap.lost_at.desc()),
    }

"""Compact telemetry's point maps, kept in the database so that every fleet worker reads
every gateway's compact batches, before and after a restart.

A gateway sends its point map inline at start and every ``point_map_every_s`` after
(:mod:`gateway.wire.compact`); its other batches name the map by id, a hash of its content.
:class:`StoredPointMaps` is the worker's memory of maps (content-addressed, the oldest
forgotten first) and remembers which maps it learnt from an inline batch: ingest stores
those (:func:`store_map`, in the batch's transaction) in ``point_maps``. A batch naming a
map this worker has not seen is decoded again once the map is read from the database
(:func:`load_map`); only a map that no worker ever received is refused (``pointmap``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.ingest.tables import PointMapRecord
from fleet.ingest.upsert import upsert
from gateway.wire import compact


class StoredPointMaps(compact.PointMaps):
    """The point maps this worker has seen; :attr:`inline` is the map the batch decoded last
    carried inline (None when it carried none)."""

    def __init__(self, kept: int = compact.MAPS_KEPT) -> None:
        super().__init__(kept)
        self.inline: compact.PointMap | None = None
        #: (gateway id, map id) already stored by this worker
        self.stored: set[tuple[int, str]] = set()

    def learn(self, point_map: compact.PointMap) -> None:
        super().learn(point_map)
        self.inline = point_map


async def load_map(
    sessions: async_sessionmaker[AsyncSession], maps: StoredPointMaps, map_id: str
) -> bool:
    """Learn map ``map_id`` from the database (any gateway's: a map is its content); whether
    it was there."""
    async with sessions() as session:
        devices = await session.scalar(
            select(PointMapRecord.devices).where(PointMapRecord.map_id == map_id).limit(1)
        )
    if devices is None:
        return False
    point_map = compact.PointMap(tuple((d, tuple(points)) for d, points in devices))
    if point_map.id != map_id:
        return False  # not the map it claims to be: refused as not seen
    compact.PointMaps.learn(maps, point_map)  # not an inline map: nothing to store
    return True


async def store_map(
    session: AsyncSession,
    maps: StoredPointMaps,
    gateway_id: int,
    point_map: compact.PointMap,
    now: datetime,
) -> None:
    """Keep ``point_map`` of gateway ``gateway_id`` (once; a second time changes nothing)."""
    if (gateway_id, point_map.id) in maps.stored:
        return
    await session.execute(
        upsert(session, PointMapRecord)
        .values(
            map_id=point_map.id,
            gateway_id=gateway_id,
            devices=[[d, list(points)] for d, points in point_map.devices],
            received_at=now,
        )
        .on_conflict_do_nothing()
    )
    maps.stored.add((gateway_id, point_map.id))

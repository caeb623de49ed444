"""A site, a gateway and its devices straight in the database, for tests that write samples
themselves (without ingest)."""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.models import Device, Gateway, Sample, Site
from fleet.timeseries.tables import HourRollup, MinuteRollup, RollupProgress


async def add_devices(maker: async_sessionmaker[AsyncSession], count: int) -> list[int]:
    """``count`` devices on one gateway of one site; their ids."""
    async with maker() as session, session.begin():
        site = Site(name="north")
        gateway = Gateway(site=site, name="gw-1")
        devices = [Device(gateway=gateway, name=f"dev-{i}") for i in range(count)]
        session.add_all([site, gateway, *devices])
        await session.flush()
        return [d.id for d in devices]


async def clear_history(maker: async_sessionmaker[AsyncSession]) -> None:
    async with maker() as session, session.begin():
        for table in (Sample, MinuteRollup, HourRollup, RollupProgress):
            await session.execute(delete(table))

"""One writer at a time per gateway, whatever the number of fleet workers.

Everything ingest decides about a gateway reads what is stored of it (the highest batch
number, the open gaps, its devices and points, its alarms), so two transactions storing
batches of the same gateway must not interleave. :func:`lock_gateways` takes the gateways'
rows as the first thing a transaction does:

* PostgreSQL: ``SELECT … FOR NO KEY UPDATE`` of the ``gateways`` rows, in the order of their
  ids (two transactions that both hold several gateways never wait for each other in a
  circle). It is the lock ``UPDATE gateways SET last_seen`` takes anyway, and it lets the
  rows that reference a gateway (samples, devices, batches) be inserted meanwhile. A second
  worker's transaction for the same gateway waits until the first one commits, then reads
  what it wrote (READ COMMITTED: every statement sees what was committed before it).
* SQLite: one writer for the whole database; a no-op ``UPDATE`` of the same rows makes the
  transaction take the write lock before it reads anything (otherwise another connection
  could commit between its reads and its first write).

The gateways whose rows are gone (deleted since their id was cached) are returned.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.models import Gateway


async def lock_gateways(session: AsyncSession, ids: Collection[int]) -> set[int]:
    """Lock the rows of gateways ``ids`` for the rest of the transaction; the ids not found."""
    wanted = sorted(set(ids))
    if not wanted:
        return set()
    if session.get_bind().dialect.name == "postgresql":
        found = await session.scalars(
            select(Gateway.id)
            .where(Gateway.id.in_(wanted))
            .order_by(Gateway.id)
            .with_for_update(key_share=True)
        )
        return set(wanted) - set(found)
    locked = await session.execute(
        update(Gateway)
        .where(Gateway.id.in_(wanted))
        .values(id=Gateway.id)
        .returning(Gateway.id)
        .execution_options(synchronize_session=False)
    )
    return set(wanted) - set(locked.scalars())

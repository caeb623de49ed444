"""Jobs that run in exactly one fleet worker: the rollout driver, retention.

With several workers (``fleet serve --workers N``, or N processes started separately) a job
such as the rollout driver must run once, not N times. :func:`run_singleton` makes every
worker try to take a PostgreSQL advisory lock named after the job, on a connection of its own
(autocommit: it holds the lock, never a transaction); the one that has it runs the job, the
others try again every few seconds. When that worker dies its connection ends, PostgreSQL
releases the lock and another worker takes the job over within ``retry_s`` (on a network
that loses the connection without closing it, within what the server's TCP keepalives allow:
see docs/scale-out.md). The holder checks its connection every ``check_s``; if it is lost,
the job is cancelled (someone else may have the lock by now) and the worker queues again.

For a periodic job that should run once per period rather than forever::

    async with leading(engine, "retention"):
        await prune(...)          # this worker alone, until the block ends

SQLite is the one-process embedded database: there the job simply runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

#: the advisory lock space of singletons (a singleton's lock is this and its name's CRC)
LOCK_CLASS = zlib.crc32(b"doorstep.singleton") & 0x7FFFFFFF
#: how often a waiting worker tries to take the lock; how often the holder checks it still
#: has its connection (and so the lock)
RETRY_S = 2.0
CHECK_S = 2.0
#: what losing the lock's connection looks like
LOST = (OperationalError, InterfaceError, DBAPIError, OSError, TimeoutError)


def lock_key(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


class LockLost(Exception):
    """The connection that held a singleton's lock is gone."""


async def run_singleton(
    engine: AsyncEngine,
    name: str,
    job: Callable[[], Awaitable[None]],
    *,
    retry_s: float = RETRY_S,
    check_s: float = CHECK_S,
) -> None:
    """Run ``job`` in this worker whenever it holds the lock ``name``, until cancelled. When
    the job returns or fails it is started again (after ``retry_s``), and the lock is given
    up in between so another worker may take it."""
    if engine.dialect.name != "postgresql":
        while True:
            await _once(name, job)
            await asyncio.sleep(retry_s)
    while True:
        try:
            async with _holding(engine, name, retry_s) as connection:
                log.info("%s: this worker runs it", name)
                await _while_held(connection, name, job, check_s)
        except LOST as exc:
            log.warning("%s: lost the database connection that held its lock (%s)", name, exc)
        except LockLost as exc:
            log.warning("%s: %s; another worker may run it now", name, exc)
        await asyncio.sleep(retry_s)


@contextlib.asynccontextmanager
async def leading(
    engine: AsyncEngine, name: str, *, retry_s: float = RETRY_S
) -> AsyncIterator[None]:
    """Wait until this worker holds the lock ``name``, and hold it for the block (given up
    when the block ends). The block is not cancelled if the connection is lost meanwhile:
    keep it short, or use :func:`run_singleton`."""
    if engine.dialect.name != "postgresql":
        yield
        return
    async with _holding(engine, name, retry_s):
        yield


async def _once(name: str, job: Callable[[], Awaitable[None]]) -> None:
    try:
        await job()
    except Exception:
        log.exception("%s failed; starting it again", name)


@contextlib.asynccontextmanager
async def _holding(
    engine: AsyncEngine, name: str, retry_s: float
) -> AsyncIterator[AsyncConnection]:
    """A connection of its own that holds the advisory lock ``name`` (waiting for it, trying
    every ``retry_s``). On the way out the connection is closed for good (invalidated), so
    the lock can never linger on a pooled connection."""
    while True:
        connection = await engine.connect()
        try:
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            taken = await connection.scalar(
                text("SELECT pg_try_advisory_lock(:c, :k)"), {"c": LOCK_CLASS, "k": lock_key(name)}
            )
            if taken:
                break
        except BaseException:
            await _discard(connection)
            raise
        await connection.close()  # not ours: the pool may keep it
        await asyncio.sleep(retry_s)
    try:
        yield connection
    finally:
        await _discard(connection)


async def _discard(connection: AsyncConnection) -> None:
    """Close the connection for good: its session (and any lock it holds) ends."""
    with contextlib.suppress(Exception):
        await asyncio.shield(connection.invalidate())


async def _while_held(
    connection: AsyncConnection, name: str, job: Callable[[], Awaitable[None]], check_s: float
) -> None:
    """Run ``job`` while the connection answers; LockLost (job cancelled) when it does not."""
    task = asyncio.create_task(_once(name, job), name=f"singleton:{name}")
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=check_s)
            if done:
                return
            try:
                async with asyncio.timeout(check_s):
                    await connection.scalar(text("SELECT 1"))
            except LOST as exc:
                raise LockLost(f"its lock's connection is gone ({exc})") from None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

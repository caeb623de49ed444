"""Opening the fleet database: an async engine for a URL, with the schema brought up to date.

``sqlite+aiosqlite:///path`` (the default, WAL mode, foreign keys on) or
``postgresql+asyncpg://user@host/db``. A plain ``sqlite:///`` or ``postgresql://`` URL gets
its async driver added.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from fleet.models import Base

DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


class DatabaseUrlError(ValueError):
    """A database URL the fleet cannot use; the message names it and what is expected."""


def async_url(url: str) -> str:
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with a terse message
        raise DatabaseUrlError(f"database URL {url!r}: {exc}") from None
    backend = parsed.get_backend_name()
    if backend not in DRIVERS:
        raise DatabaseUrlError(
            f"database URL {url!r}: expected sqlite:///PATH or postgresql://USER@HOST/DB"
        )
    return parsed.set(drivername=DRIVERS[backend]).render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_engine(url: str) -> AsyncEngine:
    engine = create_async_engine(async_url(url))
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


async def open_database(url: str) -> AsyncEngine:
    """An engine whose database holds the current schema."""
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    return engine


def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)

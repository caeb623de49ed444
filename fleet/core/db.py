"""Opening the fleet database: an async engine for a URL, with the schema brought up to date.

``sqlite+aiosqlite:///path`` (the default, WAL mode, foreign keys on) or
``postgresql+asyncpg://user@host/db``. A plain ``sqlite:///`` or ``postgresql://`` URL gets
its async driver added. Opening a database runs the alembic migrations in fleet/migrations
up to the newest one, so a new file and an old one end up with the same schema.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from fleet.errors import DatabaseUrlError

MIGRATIONS = Path(__file__).parents[1] / "migrations"
DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
#: the advisory lock taken around the migrations on PostgreSQL
MIGRATION_LOCK = zlib.crc32(b"doorstep.migrations") & 0x7FFFFFFF


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


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for the fleet's migrations (no alembic.ini needed); with
    ``connection``, the migrations run on it (fleet/migrations/env.py)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(connection: Connection) -> None:
    """Bring the schema on ``connection`` to the newest revision (a no-op when it is). On
    PostgreSQL under an advisory lock held to the end of the transaction: several workers
    starting at once migrate one after the other (the later ones find nothing to do)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    command.upgrade(alembic_config(connection), "head")


async def open_database(url: str) -> AsyncEngine:
    """An engine whose database holds the current schema (``alembic upgrade head``)."""
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade)
    except BaseException:
        await engine.dispose()
        raise
    return engine


def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)

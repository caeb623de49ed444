"""Alembic's environment for the fleet schema (``fleet.schema.Base``: every area's tables).

``fleet.core.db.open_database`` runs the migrations on its own connection, handed over in
``config.attributes["connection"]``. The ``alembic`` command (see alembic.ini here) names the
database with ``-x url=…`` instead. SQLite gets batch mode, so later revisions can alter
columns (SQLite rebuilds the table).
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from fleet.core.db import create_engine
from fleet.schema import Base


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_on_url(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run_migrations)
    finally:
        await engine.dispose()


def main() -> None:
    if context.is_offline_mode():
        raise SystemExit("fleet migrations: offline (--sql) mode is not supported")
    connection = context.config.attributes.get("connection")
    if isinstance(connection, Connection):
        run_migrations(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit(
            "fleet migrations: name the database with -x url=sqlite:///PATH "
            "or -x url=postgresql://USER@HOST/DB"
        )
    asyncio.run(run_on_url(url))


main()

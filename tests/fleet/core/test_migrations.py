"""The alembic migrations create exactly the schema of fleet/models.py, on SQLite and on a
real PostgreSQL, and opening a database again changes nothing."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from fleet.core.db import alembic_config, open_database
from fleet.schema import Base


def schema_differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    diff: list[Any] = compare_metadata(context, Base.metadata)
    return diff


def tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def test_migrated_schema_is_exactly_the_models(fleet_db_url: str) -> None:
    engine = await open_database(fleet_db_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(schema_differences) == []
            assert await conn.run_sync(tables) == set(Base.metadata.tables) | {"alembic_version"}
    finally:
        await engine.dispose()


async def test_opening_twice_keeps_data_and_revision(fleet_db_url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    engine = await open_database(fleet_db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO sites (name, title, created_at) "
                    "VALUES ('s1', 'One', CURRENT_TIMESTAMP)"
                )
            )
    finally:
        await engine.dispose()
    engine = await open_database(fleet_db_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(current_revision) == head
            assert (await conn.execute(text("SELECT title FROM sites"))).scalars().all() == ["One"]
            assert await conn.run_sync(schema_differences) == []
    finally:
        await engine.dispose()


def downgrade_to_base(connection: Connection) -> None:
    command.downgrade(alembic_config(connection), "base")


async def test_downgrade_removes_everything_and_upgrade_restores_it(fleet_db_url: str) -> None:
    engine = await open_database(fleet_db_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(downgrade_to_base)
        async with engine.connect() as conn:
            assert await conn.run_sync(tables) == {"alembic_version"}
    finally:
        await engine.dispose()
    engine = await open_database(fleet_db_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(schema_differences) == []
    finally:
        await engine.dispose()

"""Many rows in one statement on PostgreSQL, its fastest ways in: ``COPY`` for rows that are
only inserted (samples, batch numbers), and one statement over ``unnest`` of arrays for an
upsert or an update of many rows (latest values, devices' last readings), each through the
asyncpg connection under the session, in its transaction. (SQLite takes an executemany
through SQLAlchemy: :mod:`fleet.ingest.writer`.)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession


def postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def driver(session: AsyncSession) -> Any:
    """The asyncpg connection under the session (inside its transaction)."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection


async def copy(
    session: AsyncSession, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    """PostgreSQL: ``rows`` (tuples of ``columns``, JSON as text) into ``table`` by COPY."""
    await (await driver(session)).copy_records_to_table(
        table.name, records=rows, columns=list(columns)
    )


def json_text(value: Any) -> str:
    """A reading's value as JSON text, without json.dumps' machinery for the common types
    (a finite float's repr is its JSON: ingest refused the others)."""
    return (_JSON.get(type(value)) or json.dumps)(value)


_JSON: dict[type, Callable[[Any], str]] = {
    int: int.__repr__,
    float: float.__repr__,
    bool: lambda v: "true" if v else "false",
    type(None): lambda v: "null",
}

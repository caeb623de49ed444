"""The database a ``fleet`` command works on: the ``--db`` option, its URL checked, and a
change made in one transaction together with its audit entry."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from fleet.core.db import async_url, open_database, sessions
from fleet.core.settings import default_database_url
from fleet.errors import BadInput, DatabaseUrlError

T = TypeVar("T")


def db_option() -> argparse.ArgumentParser:
    """A parent parser with ``--db URL``, for every command that opens the database."""
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument(
        "--db",
        metavar="URL",
        help="sqlite:///PATH or postgresql://USER@HOST/DB "
        "(default: fleet.db under $DOORSTEP_FLEET_DIR or ~/.local/share/doorstep-fleet)",
    )
    return db


def url(given: str | None) -> str:
    """The URL given with ``--db`` (BadInput naming the option if unusable), or the default."""
    if given is None:
        return default_database_url()
    try:
        async_url(given)
    except DatabaseUrlError as exc:
        raise BadInput(f"--db: {exc}") from None
    return given


def read(given: str | None, look: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``look`` in one session on the database given with ``--db``; nothing is committed."""
    return asyncio.run(_in_transaction(url(given), look, commit=False))


def change(given: str | None, make: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``make`` in one session on the database given with ``--db`` and commit it."""
    return asyncio.run(_in_transaction(url(given), make))


async def _in_transaction(
    database: str, make: Callable[[AsyncSession], Awaitable[T]], *, commit: bool = True
) -> T:
    engine = await open_database(database)
    try:
        async with sessions(engine)() as session:
            result = await make(session)
            if commit:
                await session.commit()
            return result
    finally:
        await engine.dispose()

"""Microseconds since the epoch, exactly, in Python and in each database's SQL: how samples
are put into time buckets (history plots, rollup intervals) without float rounding."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

US = 1_000_000


class epoch_us(FunctionElement[int]):  # an SQL function, spelt like one
    """Microseconds since the epoch of a UtcDateTime column, as a BIGINT."""

    type = BigInteger()
    inherit_cache = True
    name = "epoch_us"


@compiles(epoch_us, "sqlite")
def _epoch_us_sqlite(element: epoch_us, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps the column as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC; fleet.models.UtcDateTime)
    at = compiler.process(element.clauses, **kw)
    return f"(CAST(strftime('%s', {at}) AS INTEGER) * {US} + CAST(substr({at}, 21, 6) AS INTEGER))"


@compiles(epoch_us, "postgresql")
def _epoch_us_postgresql(element: epoch_us, compiler: SQLCompiler, **kw: Any) -> str:
    # EXTRACT returns numeric (exact) since PostgreSQL 14
    at = compiler.process(element.clauses, **kw)
    return f"CAST(EXTRACT(EPOCH FROM {at}) * {US} AS BIGINT)"


class epoch_s(FunctionElement[int]):  # an SQL function, spelt like one
    """Whole seconds since the epoch of a UtcDateTime column holding whole seconds only (a
    rollup's minute or hour), as a BIGINT: cheaper than :class:`epoch_us` on PostgreSQL
    (double precision, exact for whole seconds, instead of numeric)."""

    type = BigInteger()
    inherit_cache = True
    name = "epoch_s"


@compiles(epoch_s, "sqlite")
def _epoch_s_sqlite(element: epoch_s, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(strftime('%s', {compiler.process(element.clauses, **kw)}) AS INTEGER)"


@compiles(epoch_s, "postgresql")
def _epoch_s_postgresql(element: epoch_s, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(date_part('epoch', {compiler.process(element.clauses, **kw)}) AS BIGINT)"


def to_us(at: datetime) -> int:
    """Whole microseconds since the epoch, exactly (no float on the way)."""
    return (at - datetime(1970, 1, 1, tzinfo=at.tzinfo)) // timedelta(microseconds=1)

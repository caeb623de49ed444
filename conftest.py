"""Fixtures shared by tests/ and hil_tests/: the fleet's databases.

``fleet_db_url`` runs a test once on SQLite (a file in tmp_path) and once on a real
PostgreSQL (a fresh database on a throw-away server started once per session).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hil_tests.postgres import PostgresServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def fleet_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.fresh_database()

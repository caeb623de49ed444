"""A throw-away PostgreSQL server for tests: initdb into a temporary directory, pg_ctl start on
a free loopback port with fsync off, one database per test (``fresh_database``).

initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` user and the
commands run through ``runuser``. :func:`postgres_bin` finds Debian's PostgreSQL
or skips the test saying how to get it; under CI (``CI=true``) a missing server fails instead.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest

from hil_tests.broker import free_port

HOST = "127.0.0.1"
USER = "doorstep"
MISSING = (
    "needs Debian's PostgreSQL server: sudo apt-get install postgresql "
    "(make test installs it as root)"
)


def postgres_bin() -> Path:
    """The directory holding initdb and pg_ctl; skip without them (fail under CI)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    found = [c.parent for c in candidates if (c.parent / "pg_ctl").exists()]
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is missing under CI: {MISSING}")
        pytest.skip(MISSING)
    return found[0]


class PostgresServer:
    """``with PostgresServer() as pg: url = pg.fresh_database()`` — asyncpg URLs."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.port = free_port()
        self._tmp = tempfile.mkdtemp(prefix="doorstep-pg-")
        self.data = Path(self._tmp) / "data"
        self._names = itertools.count(1)
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("running as root needs the 'postgres' user (Debian's postgresql)")
            self._as = ["runuser", "-u", "postgres", "--"]
            os.chmod(self._tmp, 0o755)

    def _run(self, *argv: str) -> None:
        done = subprocess.run([*self._as, *argv], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.stdout}")

    def __enter__(self) -> Self:
        self.data.mkdir()
        if self._as:
            shutil.chown(self.data, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        self.start()
        return self

    def start(self) -> None:
        """Start the server (again, after :meth:`stop`: an outage), on the same port."""
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.data / "log"),
            "-o", f"-h {HOST} -p {self.port} -k /tmp -c fsync=off -c max_connections=200",
            "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast", "stop")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", "immediate", "stop")
        shutil.rmtree(self._tmp, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{USER}@{HOST}:{self.port}/{database}"

    def fresh_database(self) -> str:
        """A new empty database on this server; its SQLAlchemy URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        self._run(
            "psql", "-h", HOST, "-p", str(self.port), "-U", USER, "-d", "postgres",
            "-qc", f"CREATE DATABASE {name}",
        )  # fmt: skip
        return self.url(name)

"""fleet.core.singleton on a real PostgreSQL: of several workers exactly one runs a named job;
when that worker stops or its process dies (SIGKILL), another takes the job over within
seconds, never while the first still runs it; when its database connection is cut, it stops
the job and one worker runs it again. On SQLite (one process) the job simply runs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from fleet.core.db import create_engine
from fleet.core.singleton import leading, run_singleton
from hil_tests.postgres import PostgresServer

pytestmark = pytest.mark.fleet

FAST = {"retry_s": 0.2, "check_s": 0.2}


class Worker:
    """One worker's job: counts whether it is running, and whether another ran meanwhile."""

    def __init__(self, name: str, running: set[str]) -> None:
        self.name = name
        self.running = running  # shared by the workers of one test
        self.runs = 0
        self.overlaps = 0

    async def job(self) -> None:
        self.runs += 1
        if self.running - {self.name}:
            self.overlaps += 1
        self.running.add(self.name)
        try:
            await asyncio.Event().wait()  # forever, like the rollout driver
        finally:
            self.running.discard(self.name)


async def until(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.05)


async def cancel(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    return postgres_server.fresh_database()


async def test_one_of_two_workers_runs_the_job_and_the_other_takes_over_when_it_stops(
    pg_url: str,
) -> None:
    running: set[str] = set()
    engines = [create_engine(pg_url), create_engine(pg_url)]
    workers = [Worker("a", running), Worker("b", running)]
    tasks = [
        asyncio.create_task(run_singleton(engine, "rollouts", worker.job, **FAST))
        for engine, worker in zip(engines, workers, strict=True)
    ]
    try:
        await until(lambda: len(running) == 1, 10, "one worker to run the job")
        await asyncio.sleep(1.0)  # the other keeps trying meanwhile, and keeps failing
        assert len(running) == 1
        leader = 0 if "a" in running else 1
        await cancel(tasks[leader])  # the worker stops: its connection and lock go with it
        other = workers[1 - leader]
        await until(lambda: running == {other.name}, 5, "the other worker to take over")
        assert sum(w.runs for w in workers) == 2
        assert not any(w.overlaps for w in workers)
    finally:
        await cancel(*tasks)
        for engine in engines:
            await engine.dispose()


async def test_a_cut_connection_stops_the_job_there_and_another_worker_takes_it(
    pg_url: str,
) -> None:
    running: set[str] = set()
    engines = [create_engine(pg_url), create_engine(pg_url)]
    workers = [Worker("a", running), Worker("b", running)]
    tasks = [
        asyncio.create_task(run_singleton(engine, "retention", worker.job, **FAST))
        for engine, worker in zip(engines, workers, strict=True)
    ]
    try:
        await until(lambda: len(running) == 1, 10, "one worker to run the job")
        async with engines[0].connect() as admin:  # the lock's backend dies (a network cut)
            await admin.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
                )
            )
            await admin.commit()
        await until(
            lambda: sum(w.runs for w in workers) >= 2 and len(running) == 1,
            10,
            "the job to run again in one worker",
        )
        await asyncio.sleep(1.0)
        assert len(running) == 1, "the cut worker stopped its job: one runs it"
    finally:
        await cancel(*tasks)
        for engine in engines:
            await engine.dispose()


HOLDER = """
import asyncio, sys
from fleet.core.db import create_engine
from fleet.core.singleton import run_singleton

async def job():
    print("leading", flush=True)
    await asyncio.Event().wait()

asyncio.run(run_singleton(create_engine(sys.argv[1]), "rollouts", job, retry_s=0.2))
"""


def start_holder(url: str, out: Path) -> subprocess.Popen[bytes]:
    """Another worker process that runs the job while it holds the lock."""
    with out.open("wb") as sink:
        return subprocess.Popen([sys.executable, "-c", HOLDER, url], stdout=sink)


async def test_a_worker_killed_with_sigkill_hands_the_job_over_within_seconds(
    pg_url: str, tmp_path: Path
) -> None:
    running: set[str] = set()
    out = tmp_path / "holder.out"
    holder = start_holder(pg_url, out)
    engine = create_engine(pg_url)
    worker = Worker("here", running)
    task: asyncio.Task[None] | None = None
    try:
        await until(lambda: b"leading" in out.read_bytes(), 30, "the other process to lead")
        task = asyncio.create_task(run_singleton(engine, "rollouts", worker.job, **FAST))
        await asyncio.sleep(1.0)
        assert worker.runs == 0, "the job runs in the other process only"
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        killed = time.monotonic()
        await until(lambda: worker.runs == 1, 10, "this worker to take the job over")
        assert time.monotonic() - killed < 5
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if task is not None:
            await cancel(task)
        await engine.dispose()


async def test_leading_lets_one_worker_at_a_time_into_the_block(pg_url: str) -> None:
    engines = [create_engine(pg_url), create_engine(pg_url)]
    inside: list[str] = []
    order: list[str] = []

    async def once(engine_index: int, name: str) -> None:
        async with leading(engines[engine_index], "retention", retry_s=0.1):
            inside.append(name)
            assert len(inside) == 1, "two workers in the block at once"
            order.append(name)
            await asyncio.sleep(0.5)
            inside.remove(name)

    try:
        await asyncio.gather(once(0, "a"), once(1, "b"))
        assert sorted(order) == ["a", "b"]
    finally:
        for engine in engines:
            await engine.dispose()


async def test_on_sqlite_the_job_simply_runs(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}")
    ran = asyncio.Event()

    async def job() -> None:
        ran.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(run_singleton(engine, "rollouts", job))
    try:
        await asyncio.wait_for(ran.wait(), 5)
        async with leading(engine, "retention"):
            pass  # no lock to wait for
    finally:
        await cancel(task)
        await engine.dispose()

"""The login throttle shared by several fleet workers: two throttles on two engines of one
database (SQLite and PostgreSQL) count the same runs of failed logins, with the rules of one
process kept: per name and address, the address apart, the user's own address never locked
out by a stranger, a success ending its name's run, a quiet window ending every run."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select

from fleet.accounts.login_throttle import LoginThrottle
from fleet.accounts.tables import LoginFailures
from fleet.core.db import open_database, sessions
from fleet.errors import TooManyLogins

pytestmark = pytest.mark.fleet

STRANGER, HOME = "192.0.2.7", "198.51.100.1"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def two_workers(
    url: str, clock: Clock, per_name: int = 3, per_address: int = 5
) -> AsyncIterator[tuple[LoginThrottle, LoginThrottle]]:
    engines = [await open_database(url), await open_database(url)]
    try:
        yield tuple(  # type: ignore[misc]
            LoginThrottle(sessions(e), per_name, per_address, window=60.0, clock=clock)
            for e in engines
        )
    finally:
        for engine in engines:
            await engine.dispose()


async def refused(throttle: LoginThrottle, name: str, address: str) -> str | None:
    try:
        await throttle.check(name, address)
    except TooManyLogins as exc:
        return str(exc)
    return None


async def test_failures_on_either_worker_count_together(fleet_db_url: str) -> None:
    clock = Clock()
    async with two_workers(fleet_db_url, clock) as (a, b):
        await a.failed("ada", STRANGER)
        clock.now += 10
        await b.failed("ada", STRANGER)
        assert await refused(a, "ada", STRANGER) is None
        clock.now += 10
        await a.failed("ada", STRANGER)
        for worker in (a, b):
            assert await refused(worker, "ada", STRANGER) == (
                f"too many failed logins for ada from {STRANGER}; try again in 60 s"
            )
            assert await refused(worker, "ada", HOME) is None  # her own address
        clock.now += 59.5
        assert await refused(b, "ada", STRANGER) == (
            f"too many failed logins for ada from {STRANGER}; try again in 1 s"
        )
        clock.now += 0.5  # a quiet window since the last failure
        assert await refused(b, "ada", STRANGER) is None
        await b.failed("ada", STRANGER)  # a new run starts at 1
        assert await refused(a, "ada", STRANGER) is None


async def test_an_address_guessing_many_names_is_refused_on_every_worker(
    fleet_db_url: str,
) -> None:
    clock = Clock()
    async with two_workers(fleet_db_url, clock) as (a, b):
        for n, worker in enumerate([a, b, a, b, a]):
            await worker.failed(f"name-{n}", STRANGER)
        assert await refused(b, "someone-new", STRANGER) == (
            f"too many failed logins from {STRANGER}; try again in 60 s"
        )
        assert await refused(a, "someone-new", HOME) is None


async def test_a_success_on_one_worker_ends_the_names_run_on_the_other(fleet_db_url: str) -> None:
    clock = Clock()
    async with two_workers(fleet_db_url, clock) as (a, b):
        for worker in (a, b, a):
            await worker.failed("ada", HOME)
        assert await refused(b, "ada", HOME) is not None
        async with a.sessions.begin() as session:
            await a.succeeded(session, "ada", HOME)
        assert await refused(b, "ada", HOME) is None
        async with b.sessions() as session:  # the address's own run goes on
            address_run = await session.scalar(
                select(LoginFailures.count).where(
                    LoginFailures.kind == "address", LoginFailures.address == HOME
                )
            )
        assert address_run == 3


async def test_failures_at_once_on_two_workers_are_each_counted(fleet_db_url: str) -> None:
    clock = Clock()
    async with two_workers(fleet_db_url, clock, per_name=100, per_address=100) as (a, b):
        await asyncio.gather(*(w.failed("ada", STRANGER) for w in [a, b] * 10))
        async with a.sessions() as session:
            rows = await session.execute(
                select(LoginFailures.kind, LoginFailures.count).where(
                    LoginFailures.address == STRANGER
                )
            )
            counts = dict(rows.all())
        assert counts == {"name": 20, "address": 20}


async def test_runs_past_their_window_are_forgotten(fleet_db_url: str) -> None:
    clock = Clock()
    async with two_workers(fleet_db_url, clock) as (a, b):
        for n in range(50):
            await a.failed(f"flood-{n}", STRANGER)
        clock.now += 61
        await b.failed("ada", HOME)
        async with b.sessions() as session:
            rows = await session.scalar(select(func.count()).select_from(LoginFailures))
        assert rows == 2  # ada's run and her address's; the flood is gone


class OneProcess:
    """The throttle's rules as one process kept them in memory: the model the shared throttle
    must behave like, whichever worker each call lands on."""

    def __init__(self, per_name: int, per_address: int, window: float) -> None:
        self.limits = {"name": per_name, "address": per_address}
        self.window = window
        self.runs: dict[tuple[str, str, str], tuple[int, float]] = {}

    def _current(self, key: tuple[str, str, str], now: float) -> tuple[int, float] | None:
        run = self.runs.get(key)
        if run is not None and now - run[1] >= self.window:
            del self.runs[key]
            return None
        return run

    def check(self, name: str, address: str, now: float) -> str | None:
        for key, who in (
            (("name", name, address), f"for {name} from {address}"),
            (("address", "", address), f"from {address}"),
        ):
            run = self._current(key, now)
            if run is not None and run[0] >= self.limits[key[0]]:
                wait = max(1, math.ceil(run[1] + self.window - now))
                return f"too many failed logins {who}; try again in {wait} s"
        return None

    def failed(self, name: str, address: str, now: float) -> None:
        for key in (("name", name, address), ("address", "", address)):
            run = self._current(key, now)
            self.runs[key] = (1 if run is None else run[0] + 1, now)

    def succeeded(self, name: str, address: str) -> None:
        self.runs.pop(("name", name, address), None)


STEPS = st.lists(
    st.tuples(
        st.sampled_from(["check", "check", "failed", "failed", "failed", "succeeded"]),
        st.integers(0, 1),  # the worker that handles it
        st.sampled_from(["ada", "ada", "bob", ""]),
        st.sampled_from([STRANGER, HOME]),
        st.sampled_from([0.0, 0.0, 0.5, 30.0, 59.5, 60.0, 60.0, 61.0]),  # time passing before it
    ),
    max_size=25,
)


def test_two_workers_behave_like_one_process_whatever_the_calls(fleet_db_url: str) -> None:
    clock = Clock()
    with asyncio.Runner() as runner:
        stack = contextlib.AsyncExitStack()
        workers = runner.run(
            stack.enter_async_context(two_workers(fleet_db_url, clock, per_name=2, per_address=3))
        )

        @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(STEPS)
        def check(steps: list[tuple[str, int, str, str, float]]) -> None:
            model = OneProcess(per_name=2, per_address=3, window=60.0)

            async def run() -> None:
                async with workers[0].sessions.begin() as session:
                    await session.execute(delete(LoginFailures))
                for op, worker, name, address, passing in steps:
                    clock.now += passing
                    throttle = workers[worker]
                    if op == "check":
                        expected = model.check(name, address, clock.now)
                        assert await refused(throttle, name, address) == expected
                    elif op == "failed":
                        model.failed(name, address, clock.now)
                        await throttle.failed(name, address)
                    else:
                        model.succeeded(name, address)
                        async with throttle.sessions.begin() as session:
                            await throttle.succeeded(session, name, address)

            runner.run(run())

        try:
            check()
        finally:
            runner.run(stack.aclose())

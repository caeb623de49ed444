"""The one reconnect loop says once that the broker is gone and once that it is back, backs
off between attempts, and lets nothing but a broken connection through; broker errors name
refused credentials."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import aiomqtt
import pytest

from gateway.backoff import Backoff
from gateway.errors import BrokerError, OutboxError
from gateway.mqtt import broker_error, stay_connected

GONE = BrokerError("connection refused")


class Recorded:
    """A ConnectionLog that writes down what it was told."""

    def __init__(self) -> None:
        self.said: list[tuple[str, object]] = []
        self.told = asyncio.Event()

    def connected(self, outage_s: float | None) -> None:
        self.said.append(("connected", outage_s))
        self.told.set()

    def unavailable(self, error: Exception, *, was_connected: bool) -> None:
        self.said.append(("unavailable", (error, was_connected)))
        self.told.set()

    def still_unavailable(self, error: Exception) -> None:
        self.said.append(("still", error))
        self.told.set()

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.said]


def broker(attempts: list[BaseException | None]) -> Callable[[], AbstractAsyncContextManager[int]]:
    """Connections that fail (an exception) or come up (None, numbered from 1), in order."""
    made = iter(attempts)
    up = 0

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[int]:
        nonlocal up
        failure = next(made)
        if failure is not None:
            raise failure
        up += 1
        yield up

    return connect


async def run_until(
    log: Recorded,
    attempts: list[BaseException | None],
    session: Callable[[int], object],
    done: Callable[[], bool],
    backoff: Backoff | None = None,
    *,
    steady_s: float = 0.0,
    retry_on: tuple[type[Exception], ...] = (),
) -> None:
    async def run_session(n: int) -> None:
        outcome = session(n)
        if isinstance(outcome, BaseException):
            raise outcome
        await asyncio.sleep(3600)

    task = asyncio.create_task(
        stay_connected(
            broker(attempts),
            run_session,
            log,
            backoff or Backoff(0.001, 0.004),
            steady_s=steady_s,
            retry_on=retry_on,
        )
    )
    try:
        async with asyncio.timeout(5):
            while not done():
                log.told.clear()
                await log.told.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_broker_that_is_there_is_connected_to_without_an_outage() -> None:
    log = Recorded()
    await run_until(log, [None], lambda n: None, lambda: bool(log.said))
    assert log.said == [("connected", None)]


async def test_an_outage_is_said_once_when_it_starts_and_once_when_it_ends() -> None:
    log = Recorded()
    attempts: list[BaseException | None] = [GONE, GONE, GONE, None, GONE, GONE, None]
    await run_until(
        log,
        attempts,
        lambda n: GONE if n == 1 else None,  # the first connection breaks, the second holds
        lambda: log.kinds().count("connected") == 2,
    )
    assert log.kinds() == [
        "unavailable",  # could not connect at all
        "still",
        "still",
        "connected",
        "unavailable",  # the connection that was up broke
        "still",
        "still",
        "connected",
    ]
    assert log.said[0][1] == (GONE, False)
    assert log.said[4][1] == (GONE, True)
    outages = [value for kind, value in log.said if kind == "connected"]
    assert all(isinstance(s, float) and s > 0 for s in outages), outages


async def test_a_connection_lost_inside_nested_task_groups_reports_the_broker_error() -> None:
    log = Recorded()
    nested = ExceptionGroup("session", [ExceptionGroup("drain", [GONE])])
    await run_until(
        log,
        [None, None],
        lambda n: nested if n == 1 else None,
        lambda: log.kinds().count("connected") == 2,
    )
    assert log.said[1] == ("unavailable", (GONE, True))


async def test_errors_named_in_retry_on_end_a_session_like_a_broken_connection() -> None:
    log = Recorded()
    disk = OutboxError("disk full")
    await run_until(
        log,
        [None, None],
        lambda n: disk if n == 1 else None,
        lambda: log.kinds().count("connected") == 2,
        retry_on=(OutboxError,),
    )
    assert log.said[1] == ("unavailable", (disk, True))


async def test_any_other_error_ends_the_loop() -> None:
    async def buggy(n: int) -> None:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        await stay_connected(broker([None]), buggy, Recorded(), Backoff(0.001, 0.002))


async def test_the_back_off_starts_over_after_a_connection_that_held() -> None:
    log = Recorded()
    backoff = Backoff(0.001, 0.008)
    for _ in range(3):
        backoff.next()  # as if three attempts had failed already
    await run_until(
        log,
        [None, None],
        lambda n: GONE if n == 1 else None,
        lambda: log.kinds().count("connected") == 2,
        backoff=backoff,
    )
    assert backoff.step == 0.002, "reset after the first connection, then one delay"


async def test_the_back_off_goes_on_growing_while_connections_break_at_once() -> None:
    log = Recorded()
    backoff = Backoff(0.001, 1.0)
    await run_until(
        log,
        [None, None, None],
        lambda n: GONE if n < 3 else None,
        lambda: log.kinds().count("connected") == 3,
        backoff=backoff,
        steady_s=60.0,
    )
    assert backoff.step == 0.004, "two delays, no reset"


def test_a_broker_refusing_our_credentials_says_so() -> None:
    connack = aiomqtt.MqttCodeError(5, "Connection refused: Not authorised")
    refused = broker_error(connack)
    assert refused.refused_credentials
    assert str(refused) == str(connack)
    dropped = broker_error(aiomqtt.MqttError("Disconnected during message iteration"))
    assert not dropped.refused_credentials
    assert str(dropped) == "Disconnected during message iteration"

"""The control loop: a fixed-period task that runs the interlocks and keeps watchdogs alive.

The loop is scheduled on the monotonic clock by absolute deadlines (``k · period`` from its
start), so it does not drift; it measures how late each cycle wakes and keeps p50/p99/max.
A cycle never waits for the bus: the writes it decides on are handed to the bus schedulers
as tasks (one in flight per point), and the next cycle runs on time while they queue.
If the loop falls behind by more than ``unhealthy_after_ms`` it skips heartbeats, and if it
stalls altogether nobody writes them: every device then falls back to its safe value on its
own timeout.

A write that keeps failing is logged once when it first fails, then every
``STILL_FAILING_LOG_S`` with the count of attempts, and once more with the count when it
goes through (the actuator spaces the attempts: :data:`~gateway.control.actuator.RETRY_FAILED_S`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from types import TracebackType
from typing import Self

from pydantic import Field

from gateway.bus.stats import LatencyWindow
from gateway.control.actuator import Actuator, PlannedWrite
from gateway.control.alarms import Severity
from gateway.control.engine import InterlockEngine
from gateway.control.safety_io import SafetyIo, Step
from gateway.control.watchdogs import Heartbeat, WatchdogKeeper
from gateway.devices.codec import Value
from gateway.errors import GatewayError
from gateway.validation import Strict

log = logging.getLogger(__name__)

#: While a write keeps failing, say so (with the count of attempts) this often.
STILL_FAILING_LOG_S = 600.0


class ControlConfig(Strict):
    """The ``[control]`` table: the loop's period, and how late it may run before devices are
    left to their own watchdogs (heartbeats stop while the loop is unhealthy)."""

    period_ms: float = Field(default=50.0, ge=5, le=1000)
    unhealthy_after_ms: float = Field(default=500.0, ge=20, le=10000)
    #: After a start, inputs not read yet hold each interlock as it is for this long; from
    #: then on an input that has still not been read counts as tripped.
    startup_grace_s: float = Field(default=3.0, ge=0, le=60)


Writer = Callable[[str, str, Value], Awaitable[None]]


class ControlLoop:
    """Runs ``step(now, dt)`` every period; cancel the task to stop."""

    def __init__(
        self,
        period_s: float,
        step: Callable[[float, float], Awaitable[None]],
        react: Callable[[float], None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.period_s = period_s
        #: The monotonic clock the grid is laid on; it must be the running event loop's clock
        #: (``loop.time``, which is ``time.monotonic``), since the waits are asyncio timeouts.
        self.clock = clock
        self.step = step
        #: Called between cycles as soon as :meth:`wake` is: an input changed and should be
        #: acted on now rather than at the next cycle. Off the grid, so heartbeats, lateness
        #: and health stay with the regular cycles.
        self.react = react
        self.reactions = 0
        self._woken = asyncio.Event()
        self.lateness = LatencyWindow(size=4096)
        self.max_lateness_s = 0.0
        self.cycles = 0
        self.skipped = 0
        self.last_tick = 0.0

    async def run(self) -> None:
        start = self.clock()
        last = start
        k = 0
        while True:
            due = start + k * self.period_s
            await self._until(due)
            now = self.clock()
            late = now - due
            self.lateness.add(late)
            self.max_lateness_s = max(self.max_lateness_s, late)
            self.cycles += 1
            self.last_tick = now
            await self.step(now, now - last)
            last = now
            k += 1
            behind = int((self.clock() - start) / self.period_s) - k
            if behind > 0:  # a stall: resume on the grid, never burst to catch up
                self.skipped += behind
                k += behind

    def wake(self) -> None:
        """Ask for a reaction before the next cycle (safe to call from any task)."""
        self._woken.set()

    async def _until(self, due: float) -> None:
        """Sleep until ``due``, reacting to every wake-up on the way."""
        while (delay := due - self.clock()) > 0:
            self._woken.clear()
            try:
                async with asyncio.timeout(delay):
                    await self._woken.wait()
            except TimeoutError:
                return
            if self.react is not None:
                self.reactions += 1
                self.react(self.clock())

    def snapshot(self) -> dict[str, float | int | None]:
        def ms(v: float | None) -> float | None:
            return None if v is None else round(v * 1000, 3)

        return {
            "period_ms": self.period_s * 1000,
            "cycles": self.cycles,
            "reactions": self.reactions,
            "skipped": self.skipped,
            "lateness_p50_ms": ms(self.lateness.p50),
            "lateness_p99_ms": ms(self.lateness.p99),
            "lateness_max_ms": ms(self.max_lateness_s),
        }


class Supervisor:
    """Interlocks, actuator and watchdog keeper driven by one control loop."""

    def __init__(
        self,
        config: ControlConfig,
        engine: InterlockEngine,
        actuator: Actuator,
        keeper: WatchdogKeeper,
        writer: Writer,
        safety_ios: Sequence[SafetyIo] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.engine = engine
        self.actuator = actuator
        self.keeper = keeper
        self.writer = writer
        self.safety_ios = list(safety_ios)
        self.loop = ControlLoop(config.period_ms / 1000, self._step, self._react, clock=clock)
        self._last_plan = 0.0
        self.write_errors = 0
        #: (device, point or "claim-protocol") → when its failure was last logged
        self._failing_logged: dict[tuple[str, str], float] = {}
        self._claim_failures: dict[str, int] = {}
        self._in_flight: set[tuple[str, str]] = set()
        self._tg = asyncio.TaskGroup()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stall_s = 0.0

    async def __aenter__(self) -> Self:
        await self._tg.__aenter__()
        self._spawn(self.loop.run(), "control-loop")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._cancel_all()
        await self._tg.__aexit__(exc_type, exc, tb)

    def healthy(self, now: float | None = None) -> bool:
        """The loop ran recently enough to vouch for the site."""
        now = self.loop.clock() if now is None else now
        return now - self.loop.last_tick <= self.config.unhealthy_after_ms / 1000

    def inject_stall(self, seconds: float) -> None:
        """Make the next cycle hang for ``seconds`` (a test of what a hung loop does)."""
        self._stall_s = seconds

    async def _step(self, now: float, dt: float) -> None:
        if self._stall_s:
            stall, self._stall_s = self._stall_s, 0.0
            await asyncio.sleep(stall)
            return
        self._react(now)
        for sio in self.safety_ios:
            key = (sio.device, "claim-protocol")
            if key not in self._in_flight:
                steps = sio.tick(now)
                if steps:
                    self._in_flight.add(key)
                    self._spawn(self._sequence(sio, steps), f"sio:{sio.device}")
        self._watch_remaining()
        if dt <= self.config.unhealthy_after_ms / 1000:
            for beat in self.keeper.due(now):
                key = (beat.device, beat.point)
                if key not in self._in_flight:
                    self._in_flight.add(key)
                    self._spawn(self._beat(beat), f"heartbeat:{beat.device}")

    def _watch_remaining(self) -> None:
        """Alarm while a device reports less than a third of its watchdog time left: the
        heartbeats are not arriving as they should (docs/devices.md, "The watchdog trio")."""
        for device in self.keeper.kept:
            key = f"watchdog/{device}"
            if self.keeper.remaining_low(device):
                self.engine.alarms.raise_(
                    key,
                    Severity.MINOR,
                    "watchdog",
                    f"{device}: less than a third of its watchdog time left",
                    device=device,
                )
            else:
                self.engine.alarms.clear(key)

    def _react(self, now: float) -> None:
        """Interlocks evaluated and their writes sent: every cycle, and at once when an input
        of an interlock changes (the image wakes the loop)."""
        self.engine.tick(now, now - self._last_plan if self._last_plan else 0.0)
        for write in self.actuator.plan(now, now - self._last_plan if self._last_plan else 0.0):
            key = (write.device, write.point)
            if key not in self._in_flight:
                self._in_flight.add(key)
                self._spawn(self._write(write), f"write:{key[0]}.{key[1]}")
        self._last_plan = now

    async def _write(self, write: PlannedWrite) -> None:
        what = f"{write.device}.{write.point} := {write.value!r}"
        key = (write.device, write.point)
        try:
            await self.writer(write.device, write.point, write.value)
        except GatewayError as exc:
            self.write_errors += 1
            self._failed(key, what, self.actuator.failed(write, self.loop.clock()), exc)
        else:
            self._went_through(key, what, self.actuator.sent(write, self.loop.clock()))
        finally:
            self._in_flight.discard(key)

    def _failed(self, key: tuple[str, str], what: str, attempts: int, exc: Exception) -> None:
        """Log a failed write once, then every ``STILL_FAILING_LOG_S`` with the count."""
        now = self.loop.clock()
        if attempts == 1:
            self._failing_logged[key] = now
            log.warning("%s failed: %s (retrying; further failures are counted)", what, exc)
        elif now - self._failing_logged.get(key, now) >= STILL_FAILING_LOG_S:
            self._failing_logged[key] = now
            log.warning("%s still failing: %d attempts so far, the last: %s", what, attempts, exc)

    def _went_through(self, key: tuple[str, str], what: str, failed: int) -> None:
        self._failing_logged.pop(key, None)
        if failed:
            log.warning("%s went through after %d failed attempt(s)", what, failed)

    async def _sequence(self, sio: SafetyIo, steps: list[Step]) -> None:
        """Writes that must land in order (bitmap before claim); a failure restarts it."""
        key = (sio.device, "claim-protocol")
        what = f"{sio.device}: claim sequence"
        try:
            for step in steps:
                await self.writer(sio.device, step.point, step.value)
        except GatewayError as exc:
            self.write_errors += 1
            sio.lost()
            attempts = self._claim_failures.get(sio.device, 0) + 1
            self._claim_failures[sio.device] = attempts
            self._failed(key, what, attempts, exc)
        else:
            self._went_through(key, what, self._claim_failures.pop(sio.device, 0))
        finally:
            self._in_flight.discard(key)

    async def _beat(self, beat: Heartbeat) -> None:
        try:
            await self.writer(beat.device, beat.point, beat.value)
        except GatewayError as exc:
            self.keeper.failed(beat)
            log.debug("heartbeat to %s failed: %s", beat.device, exc)
        else:
            self.keeper.sent(beat)
        finally:
            self._in_flight.discard((beat.device, beat.point))

    def _spawn(self, coro: Coroutine[object, object, None], name: str) -> None:
        task = self._tg.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cancel_all(self) -> None:
        for task in self._tasks:
            task.cancel()

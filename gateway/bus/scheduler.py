"""One scheduler per bus: exactly one transaction in flight, the most urgent one next.

Work comes from two places: the pollers' cycles (safety-class reads before telemetry before
slow reads, earliest due first, a cycle that has waited a whole period moving up a class)
and explicit requests (commands, discovery reads) that wait on a future. The next
transaction is chosen after every transaction, so a command that arrives behind a queue of
polls waits for at most the one transaction on the wire.

Every device has a circuit breaker: a unit that stops answering is skipped until its
back-off has passed and then probed with a single request, so it costs its healthy
neighbours one timeout per back-off period instead of one per poll.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.bus.coalesce import Block
from gateway.bus.pdu import ExceptionAnswer, Read, Request, decode_response, encode_request
from gateway.bus.poller import CLASS_PRIORITY, COMMAND_PRIORITY, DevicePoller, PollCycle
from gateway.bus.stats import BusStats
from gateway.bus.transport import Transport
from gateway.devices.profile import PollClass
from gateway.errors import (
    BusError,
    BusTimeout,
    FrameError,
    ModbusExceptionResponse,
    ResponseError,
    TransportClosed,
)
from gateway.image import Quality

log = logging.getLogger(__name__)

ILLEGAL_DATA_ADDRESS = 2


def _aged_priority(cycle: PollCycle, now: float) -> int:
    """A class's priority, raised one level for every period its cycle has waited.

    On an overloaded bus strict priorities would starve the slow class for ever (its points
    never read at all); aging lets it through at the pace of the faster classes, but never
    ahead of safety-class reads or commands.
    """
    waited = int((now - cycle.started) / cycle.period) if cycle.period > 0 else 0
    return max(CLASS_PRIORITY[PollClass.SAFETY], CLASS_PRIORITY[cycle.cls] - waited)


@dataclass
class _Job:
    """An explicit request (command or discovery read) waiting for the bus."""

    priority: int
    seq: int
    poller: DevicePoller
    request: Request
    future: asyncio.Future[list[int]]
    queued_at: float = field(default_factory=time.monotonic)


class BusScheduler:
    """Runs one bus: ``await scheduler.run()`` inside a task group; cancel to stop."""

    def __init__(self, transport: Transport, pollers: Sequence[DevicePoller]) -> None:
        self.transport = transport
        self.name = transport.name
        self.pollers = {p.name: p for p in pollers}
        self.stats = BusStats()
        self._jobs: list[_Job] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()

    # -- the public interface ---------------------------------------------------------------

    async def request(
        self, device: str, request: Request, priority: int = COMMAND_PRIORITY
    ) -> list[int]:
        """Queue one request for a device and wait for its answer (values read, or [])."""
        poller = self.pollers[device]
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._jobs.append(_Job(priority, next(self._seq), poller, request, fut))
        self._wake.set()
        return await fut

    def wake(self) -> None:
        """Re-plan now: a device was placed or its plan changed outside the bus task."""
        self._wake.set()

    async def run(self) -> None:
        """Serve the bus until cancelled."""
        try:
            while True:
                now = time.monotonic()
                for poller in self.pollers.values():
                    poller.due_cycles(now)
                work = self._next_work(now)
                if work is None:
                    await self._idle(now)
                    continue
                if isinstance(work, _Job):
                    self._jobs.remove(work)
                    await self._run_job(work)
                else:
                    poller, cls, block = work
                    await self._run_poll(poller, cls, block)
        finally:
            for job in self._jobs:
                if not job.future.done():
                    job.future.cancel()

    # -- choosing the next transaction ------------------------------------------------------

    def _next_work(self, now: float) -> _Job | tuple[DevicePoller, PollClass, Block] | None:
        """The most urgent transaction that may start now.

        The breaker is consulted only for the candidate about to be sent: letting a half-open
        breaker's single probe go and then sending something else would strand it.
        """
        candidates: list[tuple[tuple[int, float, int], _Job | tuple[DevicePoller, PollClass]]]
        candidates = [
            ((job.priority, job.queued_at, job.seq), job)
            for job in self._jobs
            if job.poller.eligible_at() <= now
        ]
        for poller in self.pollers.values():
            if poller.eligible_at() <= now:
                candidates += [
                    ((_aged_priority(cycle, now), cycle.started, 0), (poller, cls))
                    for cls, cycle in poller.cycles.items()
                    if cycle.pending
                ]
        for _, work in sorted(candidates, key=lambda c: c[0]):
            if isinstance(work, _Job):
                return work
            poller, cls = work
            cycle = poller.cycles[cls]
            if poller.breaker.allow(now):
                return poller, cls, cycle.pending[0]
            poller.stats.skipped_open += len(cycle.pending)
            cycle.pending.clear()
        return None

    async def _idle(self, now: float) -> None:
        """Sleep until the next poll is due, a device's gap has passed, or a request arrives."""
        wake_at = [t for p in self.pollers.values() if (t := p.next_due()) is not None]
        wake_at += [p.eligible_at() for p in self.pollers.values() if p.eligible_at() > now]
        wake_at += [j.poller.eligible_at() for j in self._jobs]
        timeout = max(0.0, min(wake_at) - now) if wake_at else None
        self._wake.clear()
        try:
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        except TimeoutError:
            pass

    # -- running transactions ---------------------------------------------------------------

    async def _run_poll(self, poller: DevicePoller, cls: PollClass, block: Block) -> None:
        cycle = poller.cycles[cls]
        cycle.pending.remove(block)
        request = Read(block.table, block.start, block.count)
        try:
            values = await self._transact(poller, request)
        except ModbusExceptionResponse as exc:
            now = time.monotonic()
            if exc.exception_code == ILLEGAL_DATA_ADDRESS:
                cycle.pending[:0] = poller.split(block, now)
            else:
                poller.mark(block, Quality.BAD, now)
        except BusError:
            pass  # counted and logged by _transact; values age into STALE / OFFLINE
        else:
            poller.store(block, values, time.monotonic())
        poller.cycle_done(cls, time.monotonic())

    async def _run_job(self, job: _Job) -> None:
        try:
            result = await self._transact(job.poller, job.request)
        except BusError as exc:
            if not job.future.done():
                job.future.set_exception(exc)
        else:
            if not job.future.done():
                job.future.set_result(result)

    async def _transact(self, poller: DevicePoller, request: Request) -> list[int]:
        """Send a request with the breaker's timeout and retries; update stats and breaker.
        Cancelled or failed for a reason that is not the unit's, the request is abandoned, so a
        probe it carried does not leave the breaker half-open for good."""
        try:
            return await self._attempts(poller, request)
        except BusError:  # the unit's verdict, already given to the breaker
            raise
        except BaseException:
            poller.breaker.abandon(time.monotonic())
            raise

    async def _attempts(self, poller: DevicePoller, request: Request) -> list[int]:
        pdu = encode_request(request)
        # The wire time of request and response is known; the breaker adapts to the rest
        # (the device's think time and the adapter's latency).
        wire = self.transport.wire_time(len(pdu), request.response_bytes())
        attempts = poller.breaker.attempts
        last_error: BusError | None = None
        for attempt in range(attempts):
            if attempt:
                poller.stats.retries += 1
                self.stats.retries += 1
            started = time.monotonic()
            try:
                answer = await self.transport.transact(
                    poller.unit_id, pdu, wire + poller.breaker.timeout_s
                )
                result = decode_response(request, answer)
            except BusTimeout as exc:
                last_error = exc
                poller.stats.timeouts += 1
                self.stats.timeouts += 1
                continue
            except (FrameError, ResponseError) as exc:
                last_error = (
                    exc
                    if isinstance(exc, FrameError)
                    else FrameError(self.name, poller.unit_id, str(exc))
                )
                poller.stats.crc_errors += 1
                self.stats.crc_errors += 1
                continue
            except TransportClosed:
                poller.breaker.record_failure(time.monotonic())
                raise
            finally:
                poller.last_request_end = time.monotonic()
            latency = poller.last_request_end - started
            think = max(0.0, latency - wire)
            self.stats.wire_busy_s += wire
            if isinstance(result, ExceptionAnswer):
                poller.breaker.record_exception_response(poller.last_request_end, think)
                poller.stats.exceptions += 1
                self.stats.exceptions += 1
                self._count_ok(poller, latency)
                raise ModbusExceptionResponse(
                    self.name, poller.unit_id, result.function_code, result.exception_code
                )
            poller.breaker.record_success(poller.last_request_end, think)
            self._count_ok(poller, latency)
            return result
        poller.breaker.record_failure(time.monotonic())
        assert last_error is not None
        raise last_error

    def _count_ok(self, poller: DevicePoller, latency: float) -> None:
        poller.stats.transactions += 1
        poller.stats.latency.add(latency)
        poller.stats.last_ok_at = time.monotonic()
        self.stats.transactions += 1
        self.stats.latency.add(latency)

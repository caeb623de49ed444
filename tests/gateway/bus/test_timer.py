"""PreciseTimer: a callback at a monotonic instant, never early, one at a time."""

from __future__ import annotations

import asyncio
import select
import time

from gateway.bus.timer import PreciseTimer


async def test_the_callback_runs_at_its_instant_never_before() -> None:
    with PreciseTimer() as timer:
        assert timer.precise  # Linux: a timerfd
        ran: list[float] = []
        for delay in (0.0, 0.0003, 0.002, 0.005):
            due = time.monotonic() + delay
            done = asyncio.Event()

            def note(due: float = due, done: asyncio.Event = done) -> None:
                ran.append(time.monotonic() - due)
                done.set()

            timer.call_at(due, note)
            await asyncio.wait_for(done.wait(), 1)
        assert all(late >= 0 for late in ran), ran


async def test_a_new_instant_replaces_the_pending_one_and_cancel_drops_it() -> None:
    with PreciseTimer() as timer:
        calls: list[str] = []
        timer.call_at(time.monotonic() + 0.002, lambda: calls.append("first"))
        timer.call_at(time.monotonic() + 0.004, lambda: calls.append("second"))
        timer.call_at(time.monotonic() + 0.003, lambda: calls.append("cancelled"))
        timer.cancel()
        timer.call_at(time.monotonic() + 0.005, lambda: calls.append("last"))
        await asyncio.sleep(0.03)
        assert calls == ["last"]


async def test_an_expired_timer_does_not_keep_the_loop_awake() -> None:
    """Its descriptor is not readable once the callback ran, whether or not the callback
    armed it again: otherwise the loop would spin."""
    with PreciseTimer() as timer:
        done = asyncio.Event()

        def again() -> None:
            timer.call_at(time.monotonic() + 0.001, done.set)

        timer.call_at(time.monotonic() + 0.001, again)
        await asyncio.wait_for(done.wait(), 1)
        await asyncio.sleep(0)
        fd = timer._fd
        assert select.select([fd], [], [], 0)[0] == []

"""The control loop keeps its grid: no drift from the work it does, no burst after a stall."""

from __future__ import annotations

import asyncio
import itertools

from gateway.control.loop import ControlLoop


async def _run(loop: ControlLoop, seconds: float) -> None:
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_step_that_takes_a_quarter_of_the_period_does_not_make_the_loop_drift() -> None:
    async def step(now: float, dt: float) -> None:
        await asyncio.sleep(0.005)  # the cycle's own work

    loop = ControlLoop(0.020, step)
    await _run(loop, 1.0)
    # sleeping a period after each step would give 1 / 25 ms = 40 cycles
    assert 46 <= loop.cycles <= 51, loop.cycles
    assert loop.lateness.p50 is not None
    assert loop.lateness.p50 < 0.005


async def test_after_a_stall_the_loop_resumes_on_its_grid_without_a_burst() -> None:
    times: list[float] = []

    async def step(now: float, dt: float) -> None:
        times.append(now)
        if len(times) == 5:
            await asyncio.sleep(0.2)  # a stalled cycle: ten periods lost

    loop = ControlLoop(0.020, step)
    await _run(loop, 0.6)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert loop.skipped >= 9
    assert min(gaps[5:]) > 0.010, "caught up in a burst"
    assert loop.max_lateness_s < 0.05, "lateness is measured on the grid, not from the stall"

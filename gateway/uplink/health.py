"""The gateway's health message: this process, its disk, the outbox, the loop and the buses.

Published by the uplink every ``health_interval_s`` (default 30 s) straight to the broker,
not through the outbox: an old health message is of no use to anyone. What it says of the
machine is measured on a background thread at a low priority, off the control loop's thread.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import psutil

from gateway import wire
from gateway.priority import background_executor

MIB = 1024 * 1024


class RuntimeStats(NamedTuple):
    """What the runtime adds to each health message: control-loop and per-bus statistics."""

    loop: Mapping[str, wire.Scalar]
    buses: Mapping[str, Mapping[str, wire.Scalar]]


StatsSource = Callable[[], RuntimeStats]
NO_STATS = RuntimeStats({}, {})


class Machine(NamedTuple):
    """What psutil measured of the machine and this process."""

    cpu_percent: float
    memory_mib: float
    disk_free_mib: float


@functools.cache
def _sampling_thread() -> ThreadPoolExecutor:
    """The one background thread of this process that asks psutil (reads of /proc and a
    statfs of the SD card, which can block behind a busy card)."""
    return background_executor(1, "health")


class HealthProbe:
    """Measures the machine and this process. The measuring runs on a background thread
    (:func:`gateway.priority.background_executor`), never on the event loop: each message
    carries the latest sample, and asks for the next one. CPU is the whole machine's between
    two samples."""

    def __init__(
        self, version: str, started_at: float, disk: Path, stats: StatsSource | None = None
    ) -> None:
        self.version = version
        self.started_at = started_at  # monotonic
        self.disk = disk
        self._stats = stats
        self._process = psutil.Process()
        self._latest = Machine(0.0, 0.0, 0.0)
        self._pending: Future[Machine] | None = None
        self.sample()  # the first call of cpu_percent only starts its measurement

    def sample(self) -> Future[Machine]:
        """Ask the sampling thread for a new sample (unless one is under way); it becomes the
        latest when taken."""
        if self._pending is None or self._pending.done():
            self._pending = _sampling_thread().submit(self._measure)
            self._pending.add_done_callback(self._taken)
        return self._pending

    @property
    def latest(self) -> Machine:
        return self._latest

    def _measure(self) -> Machine:
        return Machine(
            cpu_percent=psutil.cpu_percent(interval=None),
            memory_mib=round(self._process.memory_info().rss / MIB, 1),
            disk_free_mib=round(psutil.disk_usage(str(self.disk)).free / MIB, 1),
        )

    def _taken(self, done: Future[Machine]) -> None:
        if not done.cancelled() and done.exception() is None:
            self._latest = done.result()  # one reference swapped: safe across threads

    def message(self, outbox_depth: int, outbox_dropped: int) -> wire.Health:
        stats = self._stats() if self._stats is not None else NO_STATS
        machine = self._latest
        self.sample()
        return wire.Health(
            at=time.time(),
            uptime_s=round(time.monotonic() - self.started_at, 3),
            version=self.version,
            cpu_percent=machine.cpu_percent,
            memory_mib=machine.memory_mib,
            disk_free_mib=machine.disk_free_mib,
            outbox_depth=outbox_depth,
            outbox_dropped=outbox_dropped,
            loop=dict(stats.loop),
            buses={name: dict(bus) for name, bus in stats.buses.items()},
        )

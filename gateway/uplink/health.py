"""The gateway's health message: this process, its disk, the outbox, the loop and the buses.

Published by the uplink every ``health_interval_s`` (default 30 s) straight to the broker,
not through the outbox: an old health message is of no use to anyone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import psutil

from gateway import wire

MIB = 1024 * 1024


class RuntimeStats(NamedTuple):
    """What the runtime adds to each health message: control-loop and per-bus statistics."""

    loop: Mapping[str, wire.Scalar]
    buses: Mapping[str, Mapping[str, wire.Scalar]]


StatsSource = Callable[[], RuntimeStats]
NO_STATS = RuntimeStats({}, {})


class HealthProbe:
    """Measures the machine and this process; CPU is the whole machine's since the last call."""

    def __init__(
        self, version: str, started_at: float, disk: Path, stats: StatsSource | None = None
    ) -> None:
        self.version = version
        self.started_at = started_at  # monotonic
        self.disk = disk
        self._stats = stats
        self._process = psutil.Process()
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement

    def message(self, outbox_depth: int, outbox_dropped: int) -> wire.Health:
        stats = self._stats() if self._stats is not None else NO_STATS
        return wire.Health(
            at=time.time(),
            uptime_s=round(time.monotonic() - self.started_at, 3),
            version=self.version,
            cpu_percent=psutil.cpu_percent(interval=None),
            memory_mib=round(self._process.memory_info().rss / MIB, 1),
            disk_free_mib=round(psutil.disk_usage(str(self.disk)).free / MIB, 1),
            outbox_depth=outbox_depth,
            outbox_dropped=outbox_dropped,
            loop=dict(stats.loop),
            buses={name: dict(bus) for name, bus in stats.buses.items()},
        )

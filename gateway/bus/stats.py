"""Transaction statistics per device and per bus, for the status table and benchmarks."""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field


class LatencyWindow:
    """The most recent ``size`` samples (seconds) and their percentiles."""

    def __init__(self, size: int = 512) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._samples.append(seconds)

    @property
    def count(self) -> int:
        return len(self._samples)

    def percentile(self, p: float) -> float | None:
        """Nearest-rank percentile (p in 0..100) of the window, or None when empty."""
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        # p * n before / 100: p / 100 * n rounds 7 / 100 * 100 up to 7.000000000000001 (rank 8)
        rank = max(1, math.ceil(p * len(ordered) / 100))
        return ordered[rank - 1]

    @property
    def p50(self) -> float | None:
        return self.percentile(50)

    @property
    def p95(self) -> float | None:
        return self.percentile(95)

    @property
    def p99(self) -> float | None:
        return self.percentile(99)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


@dataclass
class DeviceStats:
    transactions: int = 0
    timeouts: int = 0
    crc_errors: int = 0
    exceptions: int = 0
    retries: int = 0
    skipped_open: int = 0
    latency: LatencyWindow = field(default_factory=LatencyWindow)
    last_ok_at: float | None = None

    def snapshot(self) -> dict[str, float | int | str | None]:
        return {
            "transactions": self.transactions,
            "timeouts": self.timeouts,
            "crc_errors": self.crc_errors,
            "exceptions": self.exceptions,
            "retries": self.retries,
            "skipped_open": self.skipped_open,
            "latency_p50_ms": _ms(self.latency.p50),
            "latency_p99_ms": _ms(self.latency.p99),
        }


@dataclass
class BusStats(DeviceStats):
    """Device counters summed over a bus, plus the line's busy time."""

    wire_busy_s: float = 0.0
    started_at: float = field(default_factory=time.monotonic)

    def transactions_per_s(self, now: float) -> float:
        elapsed = now - self.started_at
        return self.transactions / elapsed if elapsed > 0 else 0.0

    def utilisation(self, now: float) -> float:
        """Estimated wire time of the transactions as a fraction of the time elapsed."""
        elapsed = now - self.started_at
        return min(1.0, self.wire_busy_s / elapsed) if elapsed > 0 else 0.0

    def snapshot(self, now: float | None = None) -> dict[str, float | int | str | None]:
        now = time.monotonic() if now is None else now
        return {
            **super().snapshot(),
            "tx_per_s": round(self.transactions_per_s(now), 3),
            "utilisation": round(self.utilisation(now), 4),
        }

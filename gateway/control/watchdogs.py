"""Keeping device watchdogs alive — only while the gateway itself is healthy.

Every device whose profile declares the watchdog trio gets a heartbeat write at no more than a
third of its timeout (docs/devices.md, "The watchdog trio"). The keeper is ticked by the
control loop, not by a timer of its own: when the loop stalls, heartbeats stop with it and
each device falls back to its own safe value within its own timeout. That is the point — a
hung gateway must not keep devices in "managed" mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.devices.profile import Watchdog
from gateway.image import ProcessImage, Quality

#: Heartbeats go out at this fraction of the device's timeout (≤ 1/3, docs/devices.md).
REFRESH_FRACTION = 1 / 3


@dataclass
class Heartbeat:
    """One heartbeat write due now."""

    device: str
    point: str
    value: int


@dataclass
class _Kept:
    device: str
    watchdog: Watchdog
    counter: int = 0
    last_at: float = -1e9
    first_sent_at: float | None = None  # start of the current run of heartbeats that landed


class WatchdogKeeper:
    def __init__(self, image: ProcessImage, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.image = image
        self.clock = clock
        self.kept: dict[str, _Kept] = {}
        self.low_remaining: set[str] = set()  # devices whose remaining time ran low

    def keep(self, device: str, watchdog: Watchdog) -> None:
        self.kept[device] = _Kept(device, watchdog)

    def timeout_s(self, device: str) -> float:
        """The device's watchdog timeout as it reports it (its default until read)."""
        kept = self.kept[device]
        wd = kept.watchdog
        raw = self.image.reading(device, wd.timeout)
        if isinstance(raw, int | float) and raw > 0:
            return float(raw) * wd.timeout_unit_s
        return wd.default_timeout_s

    def due(self, now: float) -> list[Heartbeat]:
        """The heartbeats to write now; call once per healthy control cycle."""
        out = []
        for kept in self.kept.values():
            if now - kept.last_at < self.timeout_s(kept.device) * REFRESH_FRACTION:
                continue
            value = self._value(kept)
            if value is None:
                continue
            kept.last_at = now
            out.append(Heartbeat(kept.device, kept.watchdog.heartbeat, value))
        return out

    def sent(self, beat: Heartbeat) -> None:
        """Count a heartbeat that reached the device."""
        kept = self.kept[beat.device]
        if kept.first_sent_at is None:
            kept.first_sent_at = self.clock()
        if kept.watchdog.heartbeat_mode == "counter":
            kept.counter = (kept.counter + 1) & 0xFFFF

    def failed(self, beat: Heartbeat) -> None:
        """A heartbeat did not reach the device (it is not answering): what it reports of its
        remaining time says nothing until heartbeats have reached it for a whole timeout
        again (no "time running low" alarm for a device that was just offline)."""
        self.kept[beat.device].first_sent_at = None

    def remaining_low(self, device: str) -> bool:
        """True when the device reports less than a third of its timeout left (docs/devices.md)."""
        kept = self.kept[device]
        wd = kept.watchdog
        if wd.remaining is None or self.image.reading(device, wd.timeout) == 0:
            return False  # no remaining time reported, or the watchdog is off
        if kept.first_sent_at is None or self.clock() - kept.first_sent_at < self.timeout_s(device):
            return False  # not kept for a whole timeout (since start, or since it was silent)
        sample = self.image.find(device, wd.remaining)
        if (
            sample is None
            or sample.quality is not Quality.GOOD
            or not isinstance(sample.value, int | float)
        ):
            return False
        return sample.value * wd.remaining_unit_s < self.timeout_s(device) * REFRESH_FRACTION

    def _value(self, kept: _Kept) -> int | None:
        wd = kept.watchdog
        if wd.heartbeat_mode == "counter":
            return kept.counter
        if wd.heartbeat_mode == "constant":
            return wd.heartbeat_value
        # rewrite the timeout itself (a device without a heartbeat register): only once its
        # value is known, so the gateway never invents a timeout
        raw = self.image.reading(kept.device, wd.timeout)
        return raw if isinstance(raw, int) and raw > 0 else None

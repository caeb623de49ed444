"""The process image: the latest value of every point, with its time and quality.

Everything downstream (control loop, uplink, status table) reads the image, never the bus.
A value is GOOD when it was read within its staleness limit, STALE when the last good read is
older than that, BAD when the device answered but the value could not be read (exception,
corrupt frame, undecodable), and OFFLINE when the device does not answer at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum

from gateway.devices.codec import Value


class Quality(StrEnum):
    GOOD = "good"
    STALE = "stale"
    BAD = "bad"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class Sample:
    """One point's latest value. ``at`` is ``time.monotonic()`` of the read (or of the change
    of quality); ``value`` keeps the last known value even when quality is not GOOD."""

    value: Value
    at: float
    quality: Quality


Listener = Callable[[str, str, Sample], None]
#: called with the (device, point, sample) updates of one block (see :meth:`ProcessImage.block`)
BatchListener = Callable[[list[tuple[str, str, Sample]]], None]


class ProcessImage:
    """Latest samples keyed by (device, point), with staleness computed on read."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._samples: dict[tuple[str, str], Sample] = {}
        self._stale_after: dict[tuple[str, str], float] = {}
        self._listeners: list[Listener] = []
        self._batch_listeners: list[BatchListener] = []
        self._batch: list[tuple[str, str, Sample]] | None = None
        self._offline: set[str] = set()  # devices marked OFFLINE and not heard from since

    def declare(self, device: str, point: str, stale_after_s: float) -> None:
        """Register a point; it reads OFFLINE with no value until the first read."""
        key = (device, point)
        self._stale_after[key] = stale_after_s
        self._samples.setdefault(key, Sample(None, self._clock(), Quality.OFFLINE))

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(device, point, sample)`` on every update (in the writer's task)."""
        self._listeners.append(listener)

    def subscribe_batch(self, listener: BatchListener) -> None:
        """Call ``listener(updates)`` once per :meth:`block` with its updates, in order, and
        with a list of one for an update made outside a block (in the writer's task)."""
        self._batch_listeners.append(listener)

    @contextmanager
    def block(self) -> Iterator[None]:
        """Group the updates made inside (one poll's block): per-update listeners hear each
        at once, batch listeners hear them all together at the end. Nested blocks join the
        outer one."""
        if self._batch is not None:
            yield
            return
        self._batch = []
        try:
            yield
        finally:
            updates, self._batch = self._batch, None
            if updates:
                for listener in self._batch_listeners:
                    listener(updates)

    def update(self, device: str, point: str, value: Value, at: float | None = None) -> None:
        """Store a value read GOOD at ``at`` (default now)."""
        self._offline.discard(device)
        self._store(device, point, Sample(value, self._clock() if at is None else at, Quality.GOOD))

    def mark(self, device: str, point: str, quality: Quality, at: float | None = None) -> None:
        """Change a point's quality (BAD, OFFLINE), keeping its last value."""
        key = (device, point)
        old = self._samples.get(key)
        if old is not None and old.quality is quality:
            return
        value = old.value if old is not None else None
        self._store(device, point, Sample(value, self._clock() if at is None else at, quality))

    def mark_device(self, device: str, quality: Quality, at: float | None = None) -> None:
        """Change the quality of every point of a device (e.g. OFFLINE when it stops answering)."""
        if quality is Quality.OFFLINE:
            self._offline.add(device)
        else:
            self._offline.discard(device)
        with self.block():
            for dev, point in list(self._samples):
                if dev == device:
                    self.mark(dev, point, quality, at)

    def offline(self, device: str) -> bool:
        """Whether the device was marked OFFLINE (it stopped answering) and has not answered
        since; a device not read yet since the start is not offline."""
        return device in self._offline

    def get(self, device: str, point: str) -> Sample:
        """The sample with staleness applied; an unknown point raises KeyError naming it."""
        key = (device, point)
        try:
            sample = self._samples[key]
        except KeyError:
            raise KeyError(
                f"no point {point!r} on device {device!r} in the process image"
            ) from None
        limit = self._stale_after.get(key)
        if (
            sample.quality is Quality.GOOD
            and limit is not None
            and self._clock() - sample.at > limit
        ):
            return Sample(sample.value, sample.at, Quality.STALE)
        return sample

    def find(self, device: str, point: str) -> Sample | None:
        """The sample, or None for a point not declared yet (a SunSpec device before its
        discovery): for the control loop, which must treat that as not read."""
        if (device, point) not in self._samples:
            return None
        return self.get(device, point)

    def reading(self, device: str, point: str) -> Value:
        """Like :meth:`value`, and None too for a point not declared yet."""
        sample = self.find(device, point)
        return sample.value if sample is not None and sample.quality is Quality.GOOD else None

    def value(self, device: str, point: str) -> Value:
        """The value if GOOD, else None: for callers that must treat anything else as unknown."""
        sample = self.get(device, point)
        return sample.value if sample.quality is Quality.GOOD else None

    def points(self, device: str | None = None) -> Iterator[tuple[str, str, Sample]]:
        """Every (device, point, sample), optionally of one device, staleness applied."""
        for dev, point in list(self._samples):
            if device is None or dev == device:
                yield dev, point, self.get(dev, point)

    def _store(self, device: str, point: str, sample: Sample) -> None:
        self._samples[(device, point)] = sample
        for listener in self._listeners:
            listener(device, point, sample)
        if self._batch is not None:
            self._batch.append((device, point, sample))
        else:
            for batch_listener in self._batch_listeners:
                batch_listener([(device, point, sample)])

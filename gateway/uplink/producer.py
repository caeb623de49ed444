"""What enters the uplink's outbox: telemetry batches from report-by-exception, and alarm
events as they happen.

Telemetry: every process-image update is offered to the :class:`~gateway.uplink.reporting.Reporter`
(:meth:`Producer.on_samples`); :meth:`Producer.run` appends what it reports as a batch at the
next multiple of ``batch_interval_s`` after readings became pending (at once when a full batch
of ``max_batch`` is), and prunes the outbox every second. A batch the wire would refuse as too
large is appended as two halves; a reading too large on its own is logged and counted lost.

Alarms: each :class:`~gateway.control.alarms.AlarmEvent` is appended as an event batch of its
own, in order, idempotent by its ``seq``, so the runtime may replay its alarm journal at start
(:meth:`Producer.replay`) to cover events raised just before a ``kill -9``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping

from gateway import wire
from gateway.control.alarms import AlarmEvent
from gateway.errors import OutboxError
from gateway.image import Sample
from gateway.uplink.outbox_thread import OutboxThread
from gateway.uplink.payloads import event_batch
from gateway.uplink.reporting import PointRules, Reporter, WireFormat, reading
from gateway.wire import compact

log = logging.getLogger(__name__)

ALARMS = "alarms"  # the outbox's idempotency source for AlarmEvent.seq
PRUNE_S = 1.0  # how often the outbox's age bound is enforced: it needs no finer grain


async def _wait(event: asyncio.Event, deadline: float) -> None:
    """Until ``event`` is set or the monotonic ``deadline`` (the loop's clock) has come."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout_at(deadline):
            await event.wait()


class Producer:
    """Appends telemetry batches and alarm events to the outbox, in order."""

    def __init__(
        self,
        outbox: OutboxThread,
        reporter: Reporter,
        topics: Mapping[wire.Kind, str],
        batch_interval_s: float,
        *,
        wire_format: WireFormat | None = None,
        point_map_every_s: float | None = None,
    ) -> None:
        """``wire_format`` and ``point_map_every_s`` default to the ``[uplink]`` settings
        the reporter's :class:`PointRules` carry (``json`` without them); the point map
        starts as the site's points in the order of their profiles."""
        self._outbox = outbox
        self._reporter = reporter
        self._topics = topics
        self._interval = batch_interval_s
        rules = reporter.rules
        config = rules.config if isinstance(rules, PointRules) else None
        if wire_format is None:
            wire_format = "json" if config is None else config.wire_format
        if point_map_every_s is None:
            point_map_every_s = 10.0 if config is None else config.point_map_every_s
        self._compact = wire_format == "compact"
        self._map_every = point_map_every_s
        #: the point map of compact batches (the outbox thread's: grown when a point it
        #: lacks is reported, under a new id) and when it was last sent inline (monotonic)
        self.point_map = compact.PointMap.of(rules.units if isinstance(rules, PointRules) else ())
        self._map_sent = -math.inf
        self._full = asyncio.Event()  # a full batch is pending
        self._offered = asyncio.Event()  # a sample was offered to the reporter
        self._early: list[AlarmEvent] = []  # alarms before the outbox opened
        self._closed = False
        #: readings that never reached the outbox (too large, disk error)
        self.lost = 0

    # -- telemetry -----------------------------------------------------------------------------

    def on_samples(self, updates: list[tuple[str, str, Sample]]) -> None:
        """The process-image batch listener: offer every update to report-by-exception."""
        if self._reporter.offer_all(updates):
            self._full.set()
        self._offered.set()

    async def flush(self) -> None:
        """Append every pending reading to the outbox now (normally every batch interval);
        on return, alarms handed to :meth:`alarm` before the call are in the outbox too."""
        await self._append_pending()
        # The outbox thread runs calls in submission order: the appends handed to it before
        # (alarms, a batch the producer took meanwhile) are done when this one is.
        await self._outbox.run(lambda: None)

    async def run(self) -> None:
        """Append a batch at the next multiple of ``batch_interval_s`` after readings became
        pending (at once when a full batch is), and prune the outbox every second. Sleeps
        while nothing is pending: no wake-ups every batch interval on a quiet site."""
        interval = self._interval
        start = pruned = time.monotonic()
        while True:
            now = time.monotonic()
            if self._reporter.pending or now >= self._reporter.due:
                tick = start + math.ceil((now - start) / interval) * interval
                await _wait(self._full, tick)
                self._full.clear()
                await self._append_pending()
            else:
                self._offered.clear()
                await _wait(self._offered, min(self._reporter.due, pruned + PRUNE_S))
            if time.monotonic() - pruned >= PRUNE_S:
                pruned = time.monotonic()
                with contextlib.suppress(OutboxError):
                    await self._outbox.run(self._outbox.outbox.prune)

    async def _append_pending(self) -> None:
        """Append the readings the reporter has for now, as batches of at most ``max_batch``."""
        now = time.monotonic()
        offset = time.time() - now
        while items := self._reporter.take(now):
            try:
                self.lost += await self._outbox.run(self._append_telemetry, items, offset)
            except OutboxError as exc:
                self.lost += len(items)
                log.error("uplink: %d readings lost: %s", len(items), exc)
            self._outbox.appended.set()

    def _append_telemetry(self, items: list[tuple[str, str, Sample]], offset: float) -> int:
        """(outbox thread) One batch, or two halves if it would exceed the wire's limit;
        returns how many readings could not be appended (each too large on its own).
        ``offset`` turns the samples' monotonic times into wall-clock times."""
        if self._compact:
            payload, inline = self._compact_batch(items, offset)
        else:
            readings = [reading(d, p, s, offset) for d, p, s in items]
            inline = False

            def payload(seq: int) -> bytes:
                return wire.encode_telemetry(seq, time.time(), readings)

        topic = self._topics[wire.Kind.TELEMETRY]
        try:
            self._outbox.outbox.append(wire.Kind.TELEMETRY.value, topic, payload)
        except compact.MissingPoints as exc:  # a point the site's map lacks: a new map
            self.point_map, self._map_sent = self.point_map.extended(exc.points), -math.inf
            return self._append_telemetry(items, offset)
        except wire.WireError as exc:
            if len(items) == 1:
                log.error("uplink: reading %s.%s not sent: %s", items[0][0], items[0][1], exc)
                return 1
            half = len(items) // 2
            return self._append_telemetry(items[:half], offset) + self._append_telemetry(
                items[half:], offset
            )
        if inline:
            self._map_sent = time.monotonic()
        return 0

    def _compact_batch(
        self, items: list[tuple[str, str, Sample]], offset: float
    ) -> tuple[Callable[[int], bytes], bool]:
        """(outbox thread) A compact batch's payload maker, and whether it carries the point
        map inline (at start, after the map grew, and every ``point_map_every_s``)."""
        point_map = self.point_map
        inline = time.monotonic() - self._map_sent >= self._map_every
        fields: list[compact.Fields] = [
            (d, p, s.value, s.quality.value, s.at + offset) for d, p, s in items
        ]

        def payload(seq: int) -> bytes:
            return compact.encode_batch(seq, time.time(), fields, point_map, inline=inline)

        return payload, inline

    def send_point_map(self) -> None:
        """The next compact batch carries the point map inline: for a fleet that refused a
        batch for want of its map (reason ``pointmap``) and asks for it, rather than wait up
        to ``point_map_every_s``."""
        self._map_sent = -math.inf

    # -- alarms --------------------------------------------------------------------------------

    def alarm(self, event: AlarmEvent) -> None:
        """Append an alarm event to the outbox as an event batch of its own, in order.

        Idempotent by ``event.seq``: an event at or below the last one appended is skipped,
        so the runtime may replay its alarm journal at start (:meth:`replay`) to cover
        events raised just before a ``kill -9``."""
        if self._closed:
            log.warning(
                "uplink closed: alarm %d (%s) waits for the journal replay", event.seq, event.key
            )
            return
        if not self._outbox.is_open:
            self._early.append(event)
            return
        future = self._outbox.submit(self._append_event, event)
        future.add_done_callback(self._appended)

    def outbox_opened(self) -> None:
        """Append the alarms that came before the outbox was open."""
        for event in self._early:
            self.alarm(event)
        self._early.clear()

    async def replay(self, events: Iterable[AlarmEvent]) -> int:
        """Append the events not appended yet (the alarm journal at start); how many.

        A journal whose numbers are all below the outbox's mark was started afresh (deleted
        by hand): the mark is forgotten, or its new alarms would never be sent."""
        outbox = self._outbox.outbox
        events = list(events)
        last = await self._outbox.run(outbox.last_source, ALARMS)
        newest = max((e.seq for e in events), default=0)
        if newest < last:
            log.warning(
                "uplink: the alarm journal ends at %d but %d were sent: it was started afresh",
                newest,
                last,
            )
            await self._outbox.run(outbox.restart_source, ALARMS)
            last = 0
        fresh = [e for e in events if e.seq > last]
        for event in fresh:
            self.alarm(event)
        return len(fresh)

    def close(self) -> None:
        """From now on, alarms are left to the journal replay of the next start."""
        self._closed = True

    def _append_event(self, event: AlarmEvent) -> None:
        """(outbox thread)"""
        self._outbox.outbox.append(
            wire.Kind.EVENTS.value,
            self._topics[wire.Kind.EVENTS],
            lambda seq: event_batch(seq, event),
            source=(ALARMS, event.seq),
        )

    def _appended(self, future: asyncio.Future[None]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            log.error("uplink: alarm not appended (the journal replay at start retries): %s", exc)
        self._outbox.appended.set()

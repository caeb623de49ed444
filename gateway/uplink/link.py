"""The uplink: telemetry, alarms and health to the fleet over MQTT, with nothing lost.

``async with Uplink(config, site=…, gateway=…, state_dir=…) as uplink:`` opens the durable
outbox (:mod:`gateway.uplink.outbox`, used from its own thread:
:mod:`gateway.uplink.outbox_thread`) and runs two tasks in a task group it owns:

* the producer (:mod:`gateway.uplink.producer`), which appends report-by-exception telemetry
  batches and alarm events to the outbox;
* the connection (:mod:`gateway.uplink.connection`), one MQTT client at a time, which says
  State online, subscribes the :attr:`Uplink.inbox` (:mod:`gateway.uplink.inbox`: what the
  fleet sends this gateway, and its standing reports), drains the outbox to the broker
  (:mod:`gateway.uplink.drain`) and publishes Health (:mod:`gateway.uplink.health`) until
  the connection breaks, then reconnects.

On a clean exit it appends what is pending, gives the broker a moment to take it, says State
offline and closes the outbox; whatever was not acknowledged stays in it for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from gateway import wire
from gateway.control.alarms import AlarmEvent
from gateway.errors import OutboxError
from gateway.image import Sample
from gateway.uplink.config import UplinkConfig
from gateway.uplink.connection import Connection
from gateway.uplink.drain import Drain
from gateway.uplink.health import HealthProbe, StatsSource
from gateway.uplink.inbox import Inbox
from gateway.uplink.outbox_thread import OutboxThread
from gateway.uplink.payloads import StateMessage
from gateway.uplink.producer import Producer
from gateway.uplink.repair import Repairer
from gateway.uplink.reporting import Reporter

CLOSE_TIMEOUT_S = 2.0  # how long a clean shutdown waits to empty the outbox and say offline


class Uplink:
    """Report-by-exception telemetry, alarms and health, through the outbox, to the broker.

    Hooks for the runtime: ``image.subscribe_batch(uplink.on_samples)``; ``uplink.alarm(event)``
    for every AlarmEvent (and ``await uplink.replay(journal)`` once at start); ``stats`` for
    the health message's loop and bus statistics; ``devices`` (name → profile model) for the
    State message.
    """

    def __init__(
        self,
        config: UplinkConfig,
        *,
        site: str,
        gateway: str,
        state_dir: Path,
        version: str = "",
        units: Mapping[tuple[str, str], str | None] | None = None,
        devices: Mapping[str, str] | None = None,
        stats: StatsSource | None = None,
        started_at: float | None = None,
    ) -> None:
        self.config = config
        self.version = version
        self.client_id = config.client_id or gateway
        self.started_at = time.monotonic() if started_at is None else started_at
        self.outbox_path = state_dir / config.outbox.path
        self.devices = dict(devices or {})
        self._topics = {kind: wire.topic(site, gateway, kind) for kind in wire.Kind}
        self._probe = HealthProbe(version, self.started_at, self.outbox_path.parent, stats)
        self._outbox = OutboxThread()
        self._producer = Producer(
            self._outbox,
            Reporter(config.rules(units or {}), config.max_batch),
            self._topics,
            config.batch_interval_s,
        )
        self._drain = Drain(self._outbox, config.window, config.publish_timeout_s)
        #: fleet → gateway messages and the gateway's standing reports; register handlers
        #: before entering the uplink
        self.inbox = Inbox(self._topics)
        Repairer(self._outbox, self.inbox).install()  # the fleet asks for missing batches
        self._connection: Connection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stack = contextlib.AsyncExitStack()

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._close()
            raise
        return self

    async def _start(self) -> None:
        cfg = self.config
        self._connection = Connection(
            cfg,
            client_id=self.client_id,
            topics=self._topics,
            state=StateMessage(self.version, self.started_at, self.devices),
            drain=self._drain,
            inbox=self.inbox,
            health=self.health,
            tls=cfg.ssl_context(),
            password=cfg.secret(),
        )
        self.outbox_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        await self._outbox.open(
            self.outbox_path,
            max_rows=cfg.outbox.max_rows,
            max_age_s=cfg.outbox.max_age_s,
            keep_sent_rows=cfg.outbox.keep_sent_rows,
            keep_sent_s=cfg.outbox.keep_sent_s,
            last_to_drop=(wire.Kind.EVENTS.value,),
            synchronous=cfg.outbox.synchronous,
        )
        self._producer.outbox_opened()
        group = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._tasks = [
            group.create_task(self._producer.run(), name="uplink:produce"),
            group.create_task(self._connection.run(), name="uplink:mqtt"),
        ]

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Put pending readings in the outbox, give the broker a moment to take them, say
        offline, stop, close the outbox (whatever was not acknowledged stays in it)."""
        try:
            with contextlib.suppress(OutboxError):
                await self.flush()
            if self._connection is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._connection.say_offline(), CLOSE_TIMEOUT_S)
            for task in self._tasks:
                task.cancel()
            await self._stack.__aexit__(exc_type, exc, tb)
        finally:
            await self._close()

    async def _close(self) -> None:
        self._producer.close()
        await self._outbox.close()

    @property
    def connected(self) -> bool:
        return self._connection is not None and self._connection.client is not None

    @property
    def depth(self) -> int:
        """Messages in the outbox waiting for the broker."""
        return self._outbox.depth

    @property
    def dropped(self) -> int:
        """Messages dropped by the outbox's bounds, and readings that could not be stored."""
        return self._producer.lost + self._outbox.dropped

    async def health(self) -> wire.Health:
        """The health message: this process, the outbox's disk, the outbox, loop and buses."""
        return self._probe.message(self.depth, self.dropped)

    # -- what enters the outbox (gateway.uplink.producer) --------------------------------------

    def on_samples(self, updates: list[tuple[str, str, Sample]]) -> None:
        """The process-image batch listener: offer every update to report-by-exception."""
        self._producer.on_samples(updates)

    def on_sample(self, device: str, point: str, sample: Sample) -> None:
        """Like :meth:`on_samples`, for one update."""
        self._producer.on_samples([(device, point, sample)])

    def alarm(self, event: AlarmEvent) -> None:
        """Append an alarm event to the outbox (idempotent by ``event.seq``)."""
        self._producer.alarm(event)

    async def replay(self, events: Iterable[AlarmEvent]) -> int:
        """Append the alarm journal's events not appended yet; how many."""
        return await self._producer.replay(events)

    async def flush(self) -> None:
        """Append every pending reading to the outbox now (normally every batch interval);
        on return, alarms handed to :meth:`alarm` before the call are in the outbox too."""
        await self._producer.flush()

"""The uplink: telemetry, alarms and health to the fleet over MQTT, with nothing lost.

``async with Uplink(config, site=…, gateway=…, state_dir=…) as uplink:`` opens the durable
outbox (``gateway.uplink.outbox``) and runs two tasks in a task group it owns:

* the producer, which every ``batch_interval_s`` (or as soon as ``max_batch`` readings are
  pending) takes a telemetry batch from the report-by-exception logic (``gateway.uplink.reporting``)
  and appends it to the outbox; alarms are appended as they happen by :meth:`Uplink.alarm`;
* the connection, one aiomqtt client at a time: connect with a last will (State offline,
  retained, QoS 1), publish State online (retained), then drain the outbox in order and
  publish Health every ``health_interval_s``, until the connection breaks; then reconnect
  with jittered exponential back-off (aiomqtt 2.x has no reconnect of its own). Each
  connection uses a fresh client, so no message left in paho's queue by a broken connection
  is re-sent behind the outbox's back.

Acknowledgements. In aiomqtt 2.5.1 ``publish(qos=1)`` returns only after paho's
``on_publish``, which paho 2.2 calls on the PUBACK; it times out (``MqttError``) after the
client's ``timeout``, and it is NOT woken when the connection drops. The drain therefore runs
beside a watcher that iterates ``client.messages`` (which raises ``MqttError`` on disconnect),
so a lost connection cancels the publishes at once. Up to ``window`` publishes are in flight;
they are handed to paho in outbox order and paho writes them in that order, and a row is
deleted only when it and every row before it were acknowledged. After a reconnect the drain
starts again from the oldest row still in the outbox: the broker sees every row at least once
and in order, and a row re-sent carries the same payload and sequence number, so the fleet's
de-duplication by sequence number makes it exactly once. (A PUBACK means the broker took the
message; MQTT 3.1.1 cannot say that an ACL then discarded it.)

The outbox is used from one dedicated thread (``_db``): a ``synchronous=FULL`` commit is an
fsync, a few ms on an SD card, which must not delay the control loop sharing this event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Literal, Self, TypeVar

import aiomqtt

from gateway import wire
from gateway.control.alarms import AlarmEvent
from gateway.errors import OutboxError
from gateway.image import Sample
from gateway.mqtt import Backoff, Client
from gateway.uplink.config import UplinkConfig
from gateway.uplink.health import HealthProbe, StatsSource
from gateway.uplink.outbox import Outbox, Row
from gateway.uplink.reporting import Reporter, reading

log = logging.getLogger(__name__)

T = TypeVar("T")
ALARMS = "alarms"  # the outbox's idempotency source for AlarmEvent.seq
PRUNE_S = 1.0  # how often the outbox's age bound is enforced: it needs no finer grain
#: how long the drain holds acknowledged rows before deleting them when no new row comes to
#: peek in the same trip to the outbox thread (a row acknowledged but not yet deleted when the
#: gateway dies is sent again, which the fleet drops as a duplicate)
ACK_DELAY_S = 0.25
CLOSE_TIMEOUT_S = 2.0  # how long a clean shutdown waits to empty the outbox and say offline
#: CONNACK codes of refused credentials: MQTT 3.1.1 (4, 5) and MQTT 5 (134, 135)
REFUSED_CREDENTIALS = (4, 5, 134, 135)


async def _wait(event: asyncio.Event, deadline: float) -> None:
    """Until ``event`` is set or the monotonic ``deadline`` (the loop's clock) has come."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout_at(deadline):
            await event.wait()


def to_event(event: AlarmEvent) -> wire.Event:
    return wire.Event(
        id=event.seq,
        kind=event.kind,
        key=event.key,
        severity=event.severity.value,
        interlock=event.interlock,
        device=event.device,
        message=event.message,
        values=dict(event.values),
        at=event.at,
        by=event.by,
    )


def refused_credentials(exc: BaseException) -> bool:
    """Whether the broker refused the gateway's username/password (or its certificate)."""
    return isinstance(exc, aiomqtt.MqttCodeError) and exc.rc in REFUSED_CREDENTIALS


# -- the uplink ------------------------------------------------------------------------------


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
        self._reporter = Reporter(config.rules(units or {}), config.max_batch)
        self._probe = HealthProbe(version, self.started_at, self.outbox_path.parent, stats)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="outbox")
        self._outbox: Outbox | None = None
        self._client: aiomqtt.Client | None = None
        self._wake = asyncio.Event()  # rows were appended
        self._idle = asyncio.Event()  # the drain found the outbox empty
        self._full = asyncio.Event()  # a full batch is pending
        self._offered = asyncio.Event()  # a sample was offered to the reporter
        self._early: list[AlarmEvent] = []  # alarms before the outbox opened
        self._closed = False
        self._lost = 0  # readings that never reached the outbox (too large, disk error)
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
        self._ssl = cfg.ssl_context()
        self._password = cfg.secret()
        self.outbox_path.parent.mkdir(parents=True, exist_ok=True)
        self._outbox = await self._db(
            partial(
                Outbox,
                self.outbox_path,
                max_rows=cfg.outbox.max_rows,
                max_age_s=cfg.outbox.max_age_s,
                last_to_drop=(wire.Kind.EVENTS.value,),
                synchronous=cfg.outbox.synchronous,
            )
        )
        await self._db(self._outbox.prune)
        for event in self._early:
            self.alarm(event)
        self._early.clear()
        group = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._tasks = [
            group.create_task(self._produce(), name="uplink:produce"),
            group.create_task(self._connection(), name="uplink:mqtt"),
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._say_offline(), CLOSE_TIMEOUT_S)
            for task in self._tasks:
                task.cancel()
            await self._stack.__aexit__(exc_type, exc, tb)
        finally:
            await self._close()

    async def _close(self) -> None:
        self._closed = True
        if self._outbox is not None:
            await self._db(self._outbox.close)
        self._executor.shutdown(wait=True)

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def depth(self) -> int:
        """Messages in the outbox waiting for the broker."""
        return 0 if self._outbox is None else self._outbox.depth

    @property
    def dropped(self) -> int:
        """Messages dropped by the outbox's bounds, and readings that could not be stored."""
        return self._lost + (0 if self._outbox is None else self._outbox.dropped)

    # -- producers -----------------------------------------------------------------------------

    def on_samples(self, updates: list[tuple[str, str, Sample]]) -> None:
        """The process-image batch listener: offer every update to report-by-exception."""
        if self._reporter.offer_all(updates):
            self._full.set()
        self._offered.set()

    def on_sample(self, device: str, point: str, sample: Sample) -> None:
        """Like :meth:`on_samples`, for one update."""
        self.on_samples([(device, point, sample)])

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
        if self._outbox is None:
            self._early.append(event)
            return
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._append_event, event)
        future.add_done_callback(self._appended)

    async def replay(self, events: Iterable[AlarmEvent]) -> int:
        """Append the events not appended yet (the alarm journal at start); how many.

        A journal whose numbers are all below the outbox's mark was started afresh (deleted
        by hand): the mark is forgotten, or its new alarms would never be sent."""
        assert self._outbox is not None, "replay() inside `async with uplink`"
        outbox = self._outbox
        events = list(events)
        last = await self._db(outbox.last_source, ALARMS)
        newest = max((e.seq for e in events), default=0)
        if newest < last:
            log.warning(
                "uplink: the alarm journal ends at %d but %d were sent: it was started afresh",
                newest,
                last,
            )
            await self._db(outbox.restart_source, ALARMS)
            last = 0
        fresh = [e for e in events if e.seq > last]
        for event in fresh:
            self.alarm(event)
        return len(fresh)

    async def flush(self) -> None:
        """Append every pending reading to the outbox now (normally every batch interval);
        on return, alarms handed to :meth:`alarm` before the call are in the outbox too."""
        await self._append_pending()
        # The outbox thread runs calls in submission order: the appends handed to it before
        # (alarms, a batch the producer took meanwhile) are done when this one is.
        await self._db(lambda: None)

    async def _append_pending(self) -> None:
        """Append the readings the reporter has for now, as batches of at most ``max_batch``."""
        now = time.monotonic()
        offset = time.time() - now
        while items := self._reporter.take(now):
            try:
                self._lost += await self._db(self._append_telemetry, items, offset)
            except OutboxError as exc:
                self._lost += len(items)
                log.error("uplink: %d readings lost: %s", len(items), exc)
            self._wake.set()

    async def _produce(self) -> None:
        """Append a batch at the next multiple of ``batch_interval_s`` after readings became
        pending (at once when a full batch is), and prune the outbox every second. Sleeps
        while nothing is pending: no wake-ups every batch interval on a quiet site."""
        interval = self.config.batch_interval_s
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
                assert self._outbox is not None
                with contextlib.suppress(OutboxError):
                    await self._db(self._outbox.prune)

    def _append_telemetry(self, items: list[tuple[str, str, Sample]], offset: float) -> int:
        """(outbox thread) One batch, or two halves if it would exceed the wire's limit;
        returns how many readings could not be appended (each too large on its own).
        ``offset`` turns the samples' monotonic times into wall-clock times."""
        assert self._outbox is not None
        readings = [reading(d, p, s, offset) for d, p, s in items]

        def payload(seq: int) -> bytes:
            return wire.encode_telemetry(seq, time.time(), readings)

        topic = self._topics[wire.Kind.TELEMETRY]
        try:
            self._outbox.append(wire.Kind.TELEMETRY.value, topic, payload)
        except wire.WireError as exc:
            if len(items) == 1:
                log.error("uplink: reading %s.%s not sent: %s", items[0][0], items[0][1], exc)
                return 1
            half = len(items) // 2
            return self._append_telemetry(items[:half], offset) + self._append_telemetry(
                items[half:], offset
            )
        return 0

    def _append_event(self, event: AlarmEvent) -> None:
        """(outbox thread)"""
        assert self._outbox is not None

        def payload(seq: int) -> bytes:
            batch = wire.EventBatch(seq=seq, at=time.time(), events=[to_event(event)])
            return wire.encode(batch)

        self._outbox.append(
            wire.Kind.EVENTS.value,
            self._topics[wire.Kind.EVENTS],
            payload,
            source=(ALARMS, event.seq),
        )

    def _appended(self, future: asyncio.Future[None]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            log.error("uplink: alarm not appended (the journal replay at start retries): %s", exc)
        self._wake.set()

    # -- the connection ------------------------------------------------------------------------

    async def _connection(self) -> None:
        """Connect, run a session until the connection breaks, back off, again."""
        cfg = self.config
        where = cfg.broker
        backoff = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s)
        down_since: float | None = time.monotonic()
        first = True
        while True:
            connected_at = None
            try:
                async with self._new_client() as client:
                    connected_at = time.monotonic()
                    outage = "" if first else f" after {connected_at - (down_since or 0):.1f} s"
                    log.info("uplink: connected to %s as %s%s", where, self.client_id, outage)
                    first, down_since = False, None
                    self._client = client
                    await self._session(client)
            except* (aiomqtt.MqttError, OutboxError) as group:
                reason = group.exceptions[0]
                if refused_credentials(reason):
                    log.error(
                        "uplink: %s refused the credentials of %s (%s): check uplink.username "
                        "and uplink.password / password_file; the outbox keeps everything",
                        where,
                        cfg.username or "an anonymous client",
                        reason,
                    )
                elif down_since is None:
                    down_since = time.monotonic()
                    log.warning(
                        "uplink: lost %s (%s); the outbox keeps everything, reconnecting",
                        where,
                        reason,
                    )
                elif first:
                    first = False
                    log.warning(
                        "uplink: cannot reach %s (%s); retrying with back-off", where, reason
                    )
                else:
                    log.debug("uplink: %s still unreachable (%s)", where, reason)
            finally:
                self._client = None
            if connected_at is not None and time.monotonic() - connected_at > cfg.reconnect_max_s:
                backoff.reset()
            await asyncio.sleep(backoff.next())

    def _new_client(self) -> aiomqtt.Client:
        cfg = self.config
        client = Client(
            cfg.host,
            cfg.port,
            identifier=self.client_id,
            username=cfg.username,
            password=self._password,
            will=aiomqtt.Will(
                self._topics[wire.Kind.STATE], self._state("offline"), qos=1, retain=True
            ),
            clean_session=True,
            keepalive=cfg.keepalive,
            timeout=cfg.publish_timeout_s,
            tls_context=self._ssl,
            max_inflight_messages=cfg.window,
        )
        client.pending_calls_threshold = cfg.window + 10
        return client

    async def _session(self, client: aiomqtt.Client) -> None:
        await client.publish(
            self._topics[wire.Kind.STATE], self._state("online"), qos=1, retain=True
        )
        async with asyncio.TaskGroup() as group:
            group.create_task(self._watch(client), name="uplink:watch")
            group.create_task(self._drain(client), name="uplink:drain")
            group.create_task(self._health(client), name="uplink:health")

    @staticmethod
    async def _watch(client: aiomqtt.Client) -> None:
        """Raise MqttError as soon as the connection drops (nothing is subscribed: the
        iterator only ends that way), which cancels publishes waiting for a PUBACK."""
        async for _ in client.messages:
            pass

    async def _drain(self, client: aiomqtt.Client) -> None:
        """Publish outbox rows in id order, ``window`` at a time; delete each acknowledged
        prefix. Starts from the oldest row: whatever was in flight before is sent again."""
        assert self._outbox is not None
        timeout = self.config.publish_timeout_s
        inflight: deque[tuple[int, asyncio.Task[None]]] = deque()
        acked: list[int] = []
        cursor = 0
        async with asyncio.TaskGroup() as group:
            while True:
                self._wake.clear()
                room = self.config.window - len(inflight)
                rows = await self._db(self._settle, acked, room, cursor)
                acked = []
                for row in rows:
                    publish = client.publish(row.topic, row.payload, qos=1, timeout=timeout)
                    inflight.append((row.id, group.create_task(publish, name=f"publish:{row.id}")))
                    cursor = row.id
                if inflight:
                    self._idle.clear()
                    await asyncio.wait([inflight[0][1]])
                    while inflight and inflight[0][1].done():
                        row_id, task = inflight.popleft()
                        task.result()  # a failed publish ends the session
                        acked.append(row_id)
                    if not inflight and not self._wake.is_set():
                        # The deletes ride on the trip that peeks the next rows (at most
                        # ACK_DELAY_S later) rather than take one of their own.
                        await _wait(self._wake, time.monotonic() + ACK_DELAY_S)
                elif not rows:
                    self._idle.set()
                    await self._wake.wait()

    def _settle(self, acked: list[int], room: int, cursor: int) -> list[Row]:
        """(outbox thread) Delete the acknowledged rows, then up to ``room`` rows after
        ``cursor``: one trip to the outbox thread per turn of the drain."""
        assert self._outbox is not None
        self._outbox.ack(*acked)
        return self._outbox.peek(room, cursor) if room else []

    async def _health(self, client: aiomqtt.Client) -> None:
        while True:
            await client.publish(
                self._topics[wire.Kind.HEALTH], wire.encode(await self.health()), qos=1
            )
            await asyncio.sleep(self.config.health_interval_s)

    async def _say_offline(self) -> None:
        """On a clean shutdown the broker does not publish the will: wait for the drain to
        empty the outbox, then say offline ourselves (the caller bounds the wait)."""
        client = self._client
        if client is None:
            return
        self._idle.clear()
        self._wake.set()
        await self._idle.wait()
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(
                self._topics[wire.Kind.STATE], self._state("offline"), qos=1, retain=True
            )

    # -- payloads ------------------------------------------------------------------------------

    def _state(self, status: Literal["online", "offline"]) -> bytes:
        now = time.time()
        started = now - (time.monotonic() - self.started_at)
        at = now if status == "online" else None  # the will is written at connect time
        return wire.encode(
            wire.State(
                status=status,
                version=self.version,
                started_at=started,
                at=at,
                devices=self.devices,
            )
        )

    async def health(self) -> wire.Health:
        """The health message: this process, the outbox's disk, the outbox, loop and buses."""
        return self._probe.message(self.depth, self.dropped)

    async def _db(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` on the outbox thread (one thread: calls run in submission order)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

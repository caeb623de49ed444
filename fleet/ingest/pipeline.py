"""The ingest pipeline's MQTT end: every gateway's messages from the broker into ingest
(:class:`~fleet.ingest.ingest.Ingest`), several to a transaction, each acknowledged once its
transaction committed.

:func:`run_ingest` keeps a persistent session (fixed client id, ``clean_session=False``)
subscribed with QoS 1, so the broker keeps what gateways publish while ingest is briefly
away; it reconnects with bounded, jittered exponential back-off
(:func:`gateway.mqtt.stay_connected`), saying once that the broker is unavailable and once
that it is back. Messages are gathered (:func:`gather`: up to :data:`GATHER_ROWS` rows,
:data:`GATHER_WAIT_S` after the first, or until none comes for :data:`GATHER_IDLE_S`) and
stored in one transaction; each is acknowledged (PUBACK) only once that is done with it
(stored, duplicate or rejected): a worker killed before its commit leaves them all to be
handed out again. While the database is away (:func:`feed_checked`), what gateways send
waits on the broker (its in-flight window and queue), not in fleet memory, and a
restarted fleet is handed every unacknowledged message again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

import aiomqtt
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from fleet.core.broker import BrokerUrl, shared
from fleet.ingest.ingest import Ingest, Message, Outcome
from gateway import mqtt, wire
from gateway.backoff import EQUAL_JITTER, Backoff

# fleet.app takes the ingest and its feed from here

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The kinds ingest subscribes to and stores itself (plus those of ``Ingest.routes``).
KINDS = (wire.Kind.STATE, wire.Kind.TELEMETRY, wire.Kind.EVENTS, wire.Kind.HEALTH)
RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 10.0
#: How long connecting (CONNACK) and subscribing (SUBACK) may take.
MQTT_TIMEOUT_S = 10.0
#: Messages are gathered into one transaction until they bring this many rows (a telemetry
#: batch: one per reading), or for this long after the first one.
GATHER_ROWS = 2_000
GATHER_WAIT_S = 0.03
#: The gathering ends when no message came for this long (and looks for more this often).
GATHER_IDLE_S = 0.005
#: While the database is away, a message is tried again after this, doubling up to the most.
HOLD_FIRST_S = 0.2
HOLD_MAX_S = 5.0
#: paho logs every failed attempt at ERROR; run_ingest reports an outage itself, once.
PAHO_LOG = logging.getLogger(f"{__name__}.paho")
PAHO_LOG.setLevel(logging.CRITICAL)


async def run_ingest(
    ingest: Ingest,
    broker: BrokerUrl,
    *,
    client_id: str,
    share_group: str | None = None,
    ready: asyncio.Event | None = None,
    reconnect_min_s: float = RECONNECT_MIN_S,
    reconnect_max_s: float = RECONNECT_MAX_S,
    timeout_s: float = MQTT_TIMEOUT_S,
    gather_rows: int = GATHER_ROWS,
    gather_wait_s: float = GATHER_WAIT_S,
) -> None:
    """Subscribe (QoS 1) to every gateway's state/telemetry/events/health (and the routed
    kinds) and feed ingest, several messages to a transaction (:func:`gather`, :func:`feed`),
    each acknowledged once its transaction committed; reconnect with bounded back-off
    forever until cancelled; sets ``ready`` after the first SUBACK. A lost connection is
    logged once, and once more when it is back."""

    async def session(client: mqtt.Client) -> None:
        if ready is not None:
            ready.set()
        ingest.metrics.connected(True)
        try:
            messages = client.messages
            while True:
                gathered = await gather(ingest, messages, gather_rows, gather_wait_s)
                await feed_checked(ingest, gathered)
                for message, _ in gathered:
                    client.ack(message)
        finally:
            ingest.metrics.connected(False)

    kinds = (*KINDS, *sorted(ingest.routes))
    await mqtt.stay_connected(
        lambda: _subscribed(broker, client_id, timeout_s, kinds, share_group),
        session,
        _Log(broker),
        Backoff(reconnect_min_s, reconnect_max_s, jitter=EQUAL_JITTER),
    )


@asynccontextmanager
async def _subscribed(
    broker: BrokerUrl,
    client_id: str,
    timeout_s: float,
    kinds: tuple[wire.Kind, ...],
    share_group: str | None = None,
) -> AsyncIterator[mqtt.Client]:
    """A client of the persistent session, subscribed to ``kinds`` (as a shared subscription
    of ``share_group`` when there are several workers)."""
    client = mqtt.Client(
        broker.host,
        broker.port,
        identifier=client_id,
        clean_session=False,  # the broker keeps our QoS 1 messages while we are away
        keepalive=30,
        timeout=timeout_s,
        logger=PAHO_LOG,
        **broker.client_options(),
    )
    client.acknowledge_manually()  # paho acknowledges each message when run_ingest says so
    async with client:
        await client.subscribe([(shared(wire.subscription(k), share_group), 1) for k in kinds])
        yield client


class _Log:
    """Ingest's words for :func:`gateway.mqtt.stay_connected`."""

    def __init__(self, broker: BrokerUrl) -> None:
        self.broker = broker

    def connected(self, outage_s: float | None) -> None:
        if outage_s is not None:
            log.info("ingest: back on %s after %.1f s", self.broker, outage_s)

    def unavailable(self, error: Exception, *, was_connected: bool) -> None:
        log.warning("ingest: MQTT broker %s unavailable (%s); reconnecting", self.broker, error)

    def still_unavailable(self, error: Exception) -> None:
        pass  # said once, in unavailable()


#: A message received and what checking it gave: a message for the transaction, or its
#: rejection (final).
Gathered = tuple[mqtt.Message, Message | Outcome]


async def gather(
    ingest: Ingest, messages: aiomqtt.MessagesIterator, rows: int, wait_s: float
) -> list[Gathered]:
    """The next messages for one transaction, each checked (:meth:`Ingest.check`) as it
    comes: waits for the first, then takes more until they bring ``rows`` rows, ``wait_s``
    has passed, or none came for :data:`GATHER_IDLE_S` (the broker sends at most its
    in-flight window of unacknowledged messages: mosquitto's ``max_inflight_messages``).
    Never cancels a wait for a message (one taken from the queue as the wait is cancelled
    would be lost): it looks for more every :data:`GATHER_IDLE_S`."""
    gathered: list[Gathered] = []
    total = 0
    deadline = last = 0.0
    while total < rows:
        if gathered and not len(messages):
            now = time.monotonic()
            if now >= deadline or now - last >= GATHER_IDLE_S:
                break
            await asyncio.sleep(min(deadline - now, GATHER_IDLE_S - (now - last)))
            continue
        message = await anext(messages)
        if not gathered:
            deadline = time.monotonic() + wait_s
        gathered.append((message, await _check(ingest, message)))
        last = time.monotonic()
        checked = gathered[-1][1]
        total += checked.rows if isinstance(checked, Message) else 1
    return gathered


async def feed(ingest: Ingest, message: mqtt.Message) -> None:
    """One message into ingest (:func:`feed_checked`)."""
    await feed_checked(ingest, [(message, await _check(ingest, message))])


async def _check(ingest: Ingest, message: mqtt.Message) -> Message | Outcome:
    payload = message.payload
    data = bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode()
    return await _holding(lambda: ingest.check(message.topic.value, data))


async def feed_checked(ingest: Ingest, gathered: Sequence[Gathered]) -> None:
    """Gathered messages into ingest, in one transaction; returns once each is stored, a
    duplicate or rejected, and only then does run_ingest acknowledge them. While the database
    is unreachable the same messages are tried again with back-off (logged once when it
    goes, once when it is back) and nothing behind them is taken: skipping them would lose
    the batches for good, while holding them leaves them and everything behind them
    unacknowledged on the broker (kept for a restarted fleet too). Any other failure is
    logged and ingest goes on with the next messages."""
    checked = [c for _, c in gathered if isinstance(c, Message)]
    if not checked:
        return
    try:
        await _holding(lambda: ingest.store(checked))
    except Exception:
        topics = sorted({m.topic for m in checked})
        log.exception("ingest could not store %d messages on %s", len(checked), topics[:5])


async def _holding(call: Callable[[], Awaitable[T]]) -> T:
    """``call()``, again and again with back-off while the database is away (its pool
    exhausted, its server down): the database's trouble, not the messages'."""
    hold = Backoff(HOLD_FIRST_S, HOLD_MAX_S)
    since = None
    while True:
        try:
            result = await call()
        except (OperationalError, InterfaceError, PoolTimeout, OSError) as exc:
            if since is None:
                since = time.monotonic()
                log.warning("ingest: database unavailable (%s); holding messages", exc)
            await asyncio.sleep(hold.next())
            continue
        if since is not None:
            log.warning("ingest: database back after %.1f s", time.monotonic() - since)
        return result

"""The ingest pipeline's MQTT end: every gateway's messages from the broker into
:meth:`Ingest.handle <fleet.ingest.ingest.Ingest.handle>`, each acknowledged once handled.

:func:`run_ingest` keeps a persistent session (fixed client id, ``clean_session=False``)
subscribed with QoS 1, so the broker keeps what gateways publish while ingest is briefly
away; it reconnects with bounded, jittered exponential back-off
(:func:`gateway.mqtt.stay_connected`), saying once that the broker is unavailable and once
that it is back. Each message is acknowledged (PUBACK) only once ``handle`` is done with it
(stored, duplicate or rejected): while the database is away (:func:`feed`), what gateways
send waits on the broker (its in-flight window and queue), not in fleet memory, and a
restarted fleet is handed every unacknowledged message again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from fleet.core.broker import BrokerUrl, shared
from fleet.ingest.ingest import Ingest
from gateway import mqtt, wire
from gateway.backoff import EQUAL_JITTER, Backoff

# fleet.app takes the ingest and its feed from here

log = logging.getLogger(__name__)

#: The kinds ingest subscribes to and stores itself (plus those of ``Ingest.routes``).
KINDS = (wire.Kind.STATE, wire.Kind.TELEMETRY, wire.Kind.EVENTS, wire.Kind.HEALTH)
RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 10.0
#: How long connecting (CONNACK) and subscribing (SUBACK) may take.
MQTT_TIMEOUT_S = 10.0
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
) -> None:
    """Subscribe (QoS 1) to every gateway's state/telemetry/events/health (and the routed
    kinds) and feed
    ``ingest.handle``; reconnect with bounded back-off forever until cancelled; sets
    ``ready`` after the first SUBACK. A lost connection is logged once, and once more when
    it is back."""

    async def session(client: mqtt.Client) -> None:
        if ready is not None:
            ready.set()
        ingest.metrics.connected(True)
        try:
            async for message in client.messages:
                await feed(ingest, message)
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


async def feed(ingest: Ingest, message: mqtt.Message) -> None:
    """One message into ingest; returns once it is stored, a duplicate or rejected, and only
    then does run_ingest acknowledge it. While the database is unreachable the same message is
    tried again with back-off (logged once when it goes, once when it is back) and nothing
    behind it is taken: skipping it would lose the batch for good, while holding it leaves it
    and everything behind it unacknowledged on the broker (kept for a restarted fleet too).
    Any other failure is logged and ingest goes on with the next message."""
    payload = message.payload
    data = bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode()
    hold = Backoff(HOLD_FIRST_S, HOLD_MAX_S)
    since = None
    while True:
        try:
            await ingest.handle(message.topic.value, data)
        except (OperationalError, InterfaceError, PoolTimeout, OSError) as exc:
            # The database is away (or its pool exhausted), not the message wrong: hold the
            # stream (order kept; what is behind it stays unacknowledged on the broker) and
            # try the same message again.
            if since is None:
                since = time.monotonic()
                log.warning("ingest: database unavailable (%s); holding messages", exc)
            await asyncio.sleep(hold.next())
            continue
        except Exception:
            log.exception("ingest could not store a message on %r", message.topic.value)
        if since is not None:
            log.warning("ingest: database back after %.1f s", time.monotonic() - since)
        return

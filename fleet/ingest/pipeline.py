"""Ingest: every gateway's MQTT messages into the fleet database.

:meth:`Ingest.handle` checks one message (topic + payload) against the wire contract and the
registered gateways, and has fleet.ingest.writer write it in ONE transaction, so a crash mid-message
never leaves half a batch behind. A batch seen before is a duplicate, stored once.

Bad input never raises: it is rejected with a reason (:data:`REASONS`), counted, logged at
WARNING with the topic and stored as an :class:`IngestRejection`, and ingest goes on. The log
line is rate-limited per topic and reason (:class:`RejectionLog`); the count and the stored
rejection are per message.

:func:`run_ingest` feeds ``handle`` from the broker: a persistent session (fixed client id,
``clean_session=False``) subscribed with QoS 1, so mosquitto keeps what gateways publish while
ingest is briefly away; it reconnects with bounded, jittered exponential back-off. Each message
is acknowledged (PUBACK) only once ``handle`` is done with it (stored, duplicate or rejected):
while the database is away, what gateways send waits on the broker (its in-flight window and
queue), not in fleet memory, and a restarted fleet is handed every unacknowledged message again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiomqtt
from sqlalchemy import select
from sqlalchemy.exc import (
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.core.broker import BrokerUrl
from fleet.ingest.writer import Batch, Known, Rejected, Writer
from fleet.models import Gateway, IngestRejection, Site, utcnow
from gateway import mqtt as mqtt_client
from gateway import wire

log = logging.getLogger(__name__)

#: Why a message was refused.
REASONS = ("malformed", "version", "schema", "unknown-gateway", "oversized", "topic")
#: The kinds ingest subscribes to and stores.
KINDS = (wire.Kind.STATE, wire.Kind.TELEMETRY, wire.Kind.EVENTS, wire.Kind.HEALTH)
TOPIC_COLUMN = 300
DETAIL_COLUMN = 2000  # what is kept of a rejection's detail
RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 10.0
#: How long connecting (CONNACK) and subscribing (SUBACK) may take.
MQTT_TIMEOUT_S = 10.0
#: While the database is away, a message is tried again after this, doubling up to the most.
HOLD_FIRST_S = 0.2
HOLD_MAX_S = 5.0
#: After a rejection's WARNING, the same topic and reason is logged again after this at most.
REJECTION_LOG_EVERY_S = 60.0
#: How many (topic, reason) pairs RejectionLog keeps before it forgets the old ones.
REJECTION_LOG_KEYS = 10_000
#: paho logs every failed attempt at ERROR; run_ingest reports an outage itself, once.
PAHO_LOG = logging.getLogger(f"{__name__}.paho")
PAHO_LOG.setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class Outcome:
    """What :meth:`Ingest.handle` did with one message."""

    status: Literal["stored", "duplicate", "rejected"]
    kind: str | None = None  # the topic's kind, once the topic was understood
    reason: str | None = None  # one of REASONS when rejected
    detail: str = ""


# -- checking what a gateway sent ------------------------------------------------------------


def decode(topic: str, payload: bytes) -> tuple[str, str, wire.Kind, wire.Payload]:
    """(site, gateway, kind, payload) of a message, or :class:`Rejected` saying why not."""
    try:
        site, gateway, kind = wire.parse_topic(topic)
    except wire.WireError as exc:
        raise Rejected("topic", str(exc)) from None
    model = wire.MODELS.get(kind)
    if model is None:
        raise Rejected("topic", f"topic {topic!r}: the fleet does not ingest {kind.value!r}")
    if len(payload) > wire.MAX_PAYLOAD:
        raise Rejected("oversized", f"{len(payload)} bytes, at most {wire.MAX_PAYLOAD}")
    try:
        message = wire.decode(model, payload)
    except wire.WireError as exc:
        raise Rejected(_refusal(payload), str(exc)) from None
    if b"NaN" in payload or b"Infinity" in payload:  # json accepts them, JSON does not
        _check_finite(message.model_dump(), model.__name__)
    return site, gateway, kind, message


def _refusal(payload: bytes) -> str:
    """Which rule a payload that wire.decode refused broke (only run on refusal)."""
    try:
        raw = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return "malformed"
    if not isinstance(raw, dict):
        return "malformed"
    return "version" if raw.get("v") != wire.SCHEMA_VERSION else "schema"


def _check_finite(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise Rejected("schema", f"{where}: {value} is not a number JSON can carry")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_finite(item, f"{where}[{index}]")


def printable(value: str, limit: int | None = None) -> str:
    """``value`` safe to store in a text column (for rejections: what was refused)."""
    cleaned = value.replace("\x00", "\\x00").encode(errors="backslashreplace").decode()
    return cleaned if limit is None else cleaned[:limit]


# -- the ingest ------------------------------------------------------------------------------


class RejectionLog:
    """The WARNING for rejections, at most one per (topic, reason) every ``every_s``: a
    gateway sending the same bad message all day logs it the first time, then once a
    minute with how many were not logged meanwhile."""

    def __init__(
        self,
        every_s: float = REJECTION_LOG_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        keys: int = REJECTION_LOG_KEYS,
    ) -> None:
        self._every_s = every_s
        self._clock = clock
        self._keys = keys
        # (topic, reason) -> (when it was last logged, how many were not logged since)
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def warn(self, topic: str, rejected: Rejected) -> None:
        key = (topic, rejected.reason)
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self._every_s:
            self._last[key] = (last[0], last[1] + 1)
            return
        suppressed = 0 if last is None else last[1]
        more = (
            f" (and {suppressed} more like it in the last {now - last[0]:.0f} s, not logged)"
            if last is not None and suppressed
            else ""
        )
        log.warning("ingest rejected %r (%s): %s%s", topic, rejected.reason, rejected.detail, more)
        if last is None and len(self._last) >= self._keys:
            self._forget_old(now)
        self._last[key] = (now, 0)

    def _forget_old(self, now: float) -> None:
        """Bounded memory: drop pairs not logged for a while (all, if that is not enough)."""
        for key, (logged, _) in list(self._last.items()):
            if now - logged >= self._every_s:
                del self._last[key]
        if len(self._last) >= self._keys:
            self._last.clear()


class Ingest:
    """Stores gateways' messages; counts what it accepted and refused (:meth:`stats`)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        rejection_log: RejectionLog | None = None,
    ) -> None:
        self._sessions = sessions
        self._rejection_log = RejectionLog() if rejection_log is None else rejection_log
        # One message at a time: gap bookkeeping reads the highest stored sequence number.
        self._lock = asyncio.Lock()
        self._known = Known()
        self._accepted: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()
        self._duplicates = 0
        self._gaps_opened = 0

    def stats(self) -> dict[str, Any]:
        return {
            "accepted": dict(self._accepted),
            "rejected": dict(self._rejected),
            "duplicates": self._duplicates,
            "gaps_opened": self._gaps_opened,
        }

    async def handle(self, topic: str, payload: bytes) -> Outcome:
        """Store one MQTT message; never raises for bad input: rejects it with a counted,
        logged and stored (IngestRejection) reason (:data:`REASONS`)."""
        try:
            site, gateway, kind, message = decode(topic, payload)
        except Rejected as rejected:
            return await self._reject(topic, payload, None, rejected)
        try:
            async with self._lock:
                batch = await self._store(site, gateway, kind, message)
        except Rejected as rejected:
            return await self._reject(topic, payload, kind, rejected)
        except (SQLAlchemyError, OSError):
            raise  # the database's trouble, not the message's: feed holds or logs it
        except Exception as exc:  # a value the checks missed that the driver could not take
            refused = Rejected("schema", f"could not be stored: {type(exc).__name__}: {exc}")
            return await self._reject(topic, payload, kind, refused)
        if batch.duplicate:
            self._duplicates += 1
            return Outcome("duplicate", kind.value)
        self._accepted[kind.value] += 1
        self._gaps_opened += batch.gaps_opened
        return Outcome("stored", kind.value)

    async def _store(
        self, site: str, gateway: str, kind: wire.Kind, message: wire.Payload
    ) -> Batch:
        """In one transaction; once more with nothing cached when the database refused it
        for a row that is gone (a gateway or device deleted since it was cached)."""
        try:
            try:
                return await self._transaction(site, gateway, kind, message)
            except IntegrityError:
                self._known.forget()
                return await self._transaction(site, gateway, kind, message)
        except BaseException as exc:
            self._known.forget()  # what the rolled-back transaction read or wrote
            if isinstance(exc, DataError):  # a value the checks missed, the database refused
                raise Rejected("schema", f"the database refused it: {exc.orig}") from None
            raise

    async def _transaction(
        self, site: str, gateway: str, kind: wire.Kind, message: wire.Payload
    ) -> Batch:
        async with self._sessions.begin() as session:
            gateway_id = self._known.gateways.get((site, gateway))
            if gateway_id is None:
                gateway_id = await session.scalar(
                    select(Gateway.id).join(Site).where(Site.name == site, Gateway.name == gateway)
                )
                if gateway_id is None:
                    raise Rejected(
                        "unknown-gateway", f"gateway {gateway!r} of site {site!r} is not registered"
                    )
                self._known.gateways[(site, gateway)] = gateway_id
            writer = Writer(session, gateway_id, utcnow(), self._known)
            return await writer.store(kind, message)

    async def _reject(
        self, topic: str, payload: bytes, kind: wire.Kind | None, rejected: Rejected
    ) -> Outcome:
        self._rejected[rejected.reason] += 1
        self._rejection_log.warn(topic, rejected)
        try:
            async with self._sessions.begin() as session:
                session.add(
                    IngestRejection(
                        at=utcnow(),
                        topic=printable(topic, TOPIC_COLUMN),
                        reason=rejected.reason,
                        detail=printable(rejected.detail, DETAIL_COLUMN),
                        size=len(payload),
                    )
                )
        except SQLAlchemyError as exc:
            log.error("could not store the rejection of %r: %s", topic, exc)
        return Outcome(
            "rejected", None if kind is None else kind.value, rejected.reason, rejected.detail
        )


# -- from the broker -------------------------------------------------------------------------


async def run_ingest(
    ingest: Ingest,
    broker: BrokerUrl,
    *,
    client_id: str,
    ready: asyncio.Event | None = None,
    reconnect_min_s: float = RECONNECT_MIN_S,
    reconnect_max_s: float = RECONNECT_MAX_S,
    timeout_s: float = MQTT_TIMEOUT_S,
) -> None:
    """Subscribe (QoS 1) to every gateway's state/telemetry/events/health and feed
    ``ingest.handle``; reconnect with bounded back-off forever until cancelled; sets
    ``ready`` after the first SUBACK. A lost connection is logged once, and once more when
    it is back."""
    backoff = mqtt_client.Backoff(reconnect_min_s, reconnect_max_s)
    lost_at: float | None = None
    while True:
        try:
            client = mqtt_client.Client(
                broker.host,
                broker.port,
                identifier=client_id,
                clean_session=False,  # the broker keeps our QoS 1 messages while we are away
                keepalive=30,
                timeout=timeout_s,
                logger=PAHO_LOG,
                **broker.client_options(),
            )
            # before connecting (a persistent session's messages come right after CONNACK);
            # aiomqtt 2.5.1 has no option for it: paho acknowledges only when told (below)
            client._client.manual_ack_set(True)
            async with client:
                await client.subscribe([(wire.subscription(kind), 1) for kind in KINDS])
                if lost_at is not None:
                    log.info("ingest: back on %s after %.1f s", broker, time.monotonic() - lost_at)
                    lost_at = None
                backoff.reset()
                if ready is not None:
                    ready.set()
                async for message in client.messages:
                    await feed(ingest, message)
                    client._client.ack(message.mid, message.qos)
        except aiomqtt.MqttError as exc:
            if lost_at is None:
                lost_at = time.monotonic()
                log.warning("ingest: MQTT broker %s unavailable (%s); reconnecting", broker, exc)
        await asyncio.sleep(backoff.next())


async def feed(ingest: Ingest, message: aiomqtt.Message) -> None:
    """One message into ingest; returns once it is stored, a duplicate or rejected, and only
    then does run_ingest acknowledge it. While the database is unreachable the same message is
    tried again with back-off (logged once when it goes, once when it is back) and nothing
    behind it is taken: skipping it would lose the batch for good, while holding it leaves it
    and everything behind it unacknowledged on the broker (kept for a restarted fleet too).
    Any other failure is logged and ingest goes on with the next message."""
    payload = message.payload
    data = bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode()
    delay, since = HOLD_FIRST_S, None
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
            await asyncio.sleep(delay)
            delay = min(HOLD_MAX_S, delay * 2)
            continue
        except Exception:
            log.exception("ingest could not store a message on %r", message.topic.value)
        if since is not None:
            log.warning("ingest: database back after %.1f s", time.monotonic() - since)
        return

"""Ingest: gateway messages checked, then stored several to a transaction, each exactly once
or refused.

:meth:`Ingest.check` checks a message (topic + payload) against the wire contract
(:mod:`fleet.ingest.checks`); :meth:`Ingest.store` has the writer (:mod:`fleet.ingest.writer`)
store a list of checked messages in one transaction, so a crash mid-way never leaves half a
batch behind; :meth:`Ingest.handle` does both for one message. The transaction first locks
the gateways its messages come from (:mod:`fleet.ingest.locks`): any number of fleet workers
may store any gateway's messages, in any order and more than once; a batch seen before is a
duplicate, stored once (:mod:`fleet.ingest.sequences`).

A message refused inside the transaction (a batch number too far ahead, a gateway beyond its
limits, a value the database would not take) does not take the others with it: the
transaction is rolled back and run again without it. After :data:`RETRIES_REFUSED` such
refusals in one list, the rest are stored one transaction each.

Messages that are not telemetry (a gateway's configuration status, its OTA status, …) go to
the :data:`Route` their area registered for the kind (``Ingest(routes=…)``, composed in
:mod:`fleet.app`): checked against the wire contract like the rest, then handed with the
gateway's row id inside the same transaction.

Bad input never raises: it is rejected with a reason (:data:`~fleet.ingest.checks.REASONS`),
counted, and logged and stored by the rejection log (:mod:`fleet.ingest.rejections`); ingest
goes on. The database's own trouble does raise: the feed (:mod:`fleet.ingest.pipeline`)
holds the messages until the database is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.core.metrics import FleetMetrics
from fleet.errors import PointMapNotSeen, Rejected
from fleet.ingest.checks import Limits, decode
from fleet.ingest.known import Known
from fleet.ingest.locks import lock_gateways
from fleet.ingest.pointmaps import StoredPointMaps, load_map, store_map
from fleet.ingest.rejections import RejectionLog, store_rejection
from fleet.ingest.sequences import Batch
from fleet.ingest.writer import Writer
from fleet.models import BatchKind, Gateway, Site, utcnow
from gateway import wire
from gateway.wire import compact

log = logging.getLogger(__name__)

#: Refusals inside one list's transaction before the rest go one transaction each.
RETRIES_REFUSED = 3
#: A transaction PostgreSQL chose to abort (a deadlock with another writer of the same rows,
#: outside ingest's gateway order) is run again this many times.
RETRIES_CONFLICT = 5
_CONFLICTS = frozenset({"40001", "40P01"})  # serialization failure, deadlock detected
#: The kinds whose batches are numbered.
_NUMBERED = {wire.Kind.TELEMETRY: BatchKind.TELEMETRY, wire.Kind.EVENTS: BatchKind.EVENTS}


@dataclass(frozen=True)
class Outcome:
    """What :meth:`Ingest.handle` did with one message."""

    status: Literal["stored", "duplicate", "rejected"]
    kind: str | None = None  # the topic's kind, once the topic was understood
    reason: str | None = None  # one of REASONS when rejected
    detail: str = ""


@dataclass(frozen=True)
class GatewayRef:
    """The gateway a routed message came from."""

    id: int
    site: str
    name: str


#: Stores (or acts on) one checked message of a routed kind, inside ingest's transaction.
Route = Callable[[AsyncSession, GatewayRef, wire.Payload], Awaitable[None]]


@dataclass(frozen=True)
class Message:
    """A checked message waiting for its transaction."""

    topic: str
    size: int  # bytes
    site: str
    gateway: str
    kind: wire.Kind
    payload: wire.Payload
    #: the point map a compact telemetry batch carried inline
    point_map: compact.PointMap | None = None

    @property
    def rows(self) -> int:
        """About how many rows it writes (the pipeline gathers messages by rows)."""
        if isinstance(self.payload, wire.TelemetryBatch):
            return 1 + len(self.payload.readings)
        if isinstance(self.payload, wire.EventBatch):
            return 1 + len(self.payload.events)
        return 1


class _Refused(Exception):
    """Message ``index`` of a transaction's list was refused; the rest are tried again."""

    def __init__(self, index: int, rejected: Rejected) -> None:
        super().__init__(rejected.detail)
        self.index = index
        self.rejected = rejected


class _Again(Exception):
    """A gateway remembered is gone: the transaction is tried again with nothing cached."""


class Ingest:
    """Stores gateways' messages; counts what it accepted and refused (:meth:`stats`)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        rejection_log: RejectionLog | None = None,
        routes: Mapping[wire.Kind, Route] | None = None,
        limits: Limits | None = None,
        metrics: FleetMetrics | None = None,
    ) -> None:
        self._sessions = sessions
        self.metrics = FleetMetrics() if metrics is None else metrics  # for Prometheus
        self.limits = Limits() if limits is None else limits
        self.routes = dict(routes or {})
        self.maps = StoredPointMaps()
        self._rejection_log = RejectionLog() if rejection_log is None else rejection_log
        # One transaction at a time in this worker (what it remembers is shared by them);
        # other workers are kept apart by the gateways' locks in the database.
        self._lock = asyncio.Lock()
        self._known = Known()
        self._accepted: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()
        self._duplicates = 0
        self._gaps_opened = 0
        self._transactions = 0

    def stats(self) -> dict[str, Any]:
        return {
            "accepted": dict(self._accepted),
            "rejected": dict(self._rejected),
            "duplicates": self._duplicates,
            "gaps_opened": self._gaps_opened,
        }

    @property
    def transactions(self) -> int:
        """How many lists of messages were stored together (each one transaction, tried
        again without a refused message)."""
        return self._transactions

    async def handle(self, topic: str, payload: bytes) -> Outcome:
        """Store one MQTT message; never raises for bad input: rejects it with a counted,
        logged and stored (IngestRejection) reason (:data:`~fleet.ingest.checks.REASONS`)."""
        return (await self.handle_many([(topic, payload)]))[0]

    async def handle_many(self, messages: Sequence[tuple[str, bytes]]) -> list[Outcome]:
        """Store several MQTT messages in one transaction (each refused one on its own)."""
        outcomes: list[Outcome | None] = []
        checked: list[Message] = []
        for topic, payload in messages:
            message = await self.check(topic, payload)
            if isinstance(message, Message):
                checked.append(message)
                outcomes.append(None)
            else:
                outcomes.append(message)
        stored = iter(await self.store(checked))
        return [next(stored) if outcome is None else outcome for outcome in outcomes]

    async def check(self, topic: str, payload: bytes) -> Message | Outcome:
        """The message checked against the wire contract, or its rejection. Compact
        telemetry naming a point map this worker has not seen reads it from the database."""
        maps = self.maps
        for _ in range(2):
            maps.inline = None
            try:
                site, gateway, kind, message = decode(topic, payload, self.routes, maps)
            except PointMapNotSeen as unseen:
                if maps.get(unseen.map_id) is None and await load_map(
                    self._sessions, maps, unseen.map_id
                ):
                    continue
                return await self._reject(topic, len(payload), None, unseen)
            except Rejected as rejected:
                return await self._reject(topic, len(payload), None, rejected)
            return Message(topic, len(payload), site, gateway, kind, message, maps.inline)
        raise AssertionError("unreachable: a map learnt is found")  # pragma: no cover

    async def store(self, messages: Sequence[Message]) -> list[Outcome]:
        """Store checked messages in one transaction; their outcomes, in order."""
        if not messages:
            return []
        async with self._lock:
            self._transactions += 1
            started = time.perf_counter()
            results = await self._store_all(list(messages))
            write_s = time.perf_counter() - started
        outcomes = []
        for message, result in zip(messages, results, strict=True):
            kind = message.kind.value
            if isinstance(result, Rejected):
                outcomes.append(await self._reject(message.topic, message.size, kind, result))
            elif result.duplicate:
                self._duplicates += 1
                self.metrics.handled(kind, "duplicate", write_s=write_s)
                outcomes.append(Outcome("duplicate", kind))
            else:
                self._accepted[kind] += 1
                self._gaps_opened += result.gaps_opened
                payload = message.payload
                at = getattr(payload, "at", None)
                self.metrics.handled(
                    kind, "stored", write_s=write_s,
                    lag_s=None if at is None else time.time() - at,
                    readings=len(payload.readings)
                    if isinstance(payload, wire.TelemetryBatch) else 0,
                )  # fmt: skip
                outcomes.append(Outcome("stored", kind))
        return outcomes

    async def _store_all(self, messages: list[Message]) -> list[Batch | Rejected]:
        """Each message's batch or rejection: one transaction for all of them, run again
        without a message it refused."""
        results: dict[int, Batch | Rejected] = {}
        pending = list(range(len(messages)))
        refusals = 0
        while pending:
            if refusals >= RETRIES_REFUSED and len(pending) > 1:
                for index in pending:  # one at a time: nothing can take another down
                    results[index] = (await self._store_all([messages[index]]))[0]
                break
            try:
                batches = await self._attempts([messages[i] for i in pending])
            except _Refused as refused:
                results[pending.pop(refused.index)] = refused.rejected
                refusals += 1
                continue
            except (DataError, IntegrityError) as exc:  # at the end: not one message's
                if len(pending) == 1:
                    results[pending[0]] = Rejected("schema", f"the database refused it: {exc.orig}")
                    break
                refusals = RETRIES_REFUSED
                continue
            results.update(zip(pending, batches, strict=True))
            break
        return [results[i] for i in range(len(messages))]

    async def _attempts(self, messages: list[Message]) -> list[Batch]:
        """The transaction, again when the database aborted it for a conflict, a row
        remembered is gone (a gateway or device deleted since), or a row was taken."""
        conflicts = 0
        integrity = False
        while True:
            try:
                return await self._transaction(messages)
            except _Again:
                continue
            except IntegrityError:
                if integrity:
                    raise
                integrity = True
            except DBAPIError as exc:
                code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
                if code not in _CONFLICTS or conflicts >= RETRIES_CONFLICT:
                    raise
                conflicts += 1
                log.info("ingest: transaction aborted by the database (%s); again", code)

    async def _transaction(self, messages: list[Message]) -> list[Batch]:
        try:
            gateways = await self._gateways(messages)
            async with self._sessions.begin() as session:
                if await lock_gateways(session, set(gateways.values())):
                    raise _Again
                writer = Writer(session, utcnow(), self._known, self.limits)
                for kind, numbered in _NUMBERED.items():
                    ids = {gateways[(m.site, m.gateway)] for m in messages if m.kind is kind}
                    if len(ids) > 1:
                        await writer.sequences.prefetch(ids, numbered)
                batches = []
                for index, message in enumerate(messages):
                    gateway_id = gateways[(message.site, message.gateway)]
                    batches.append(await self._one(session, writer, index, gateway_id, message))
                await writer.flush()
            return batches
        except BaseException:
            self._known.forget()  # what the rolled-back transaction read or wrote
            self.maps.stored.clear()
            raise

    async def _gateways(self, messages: list[Message]) -> dict[tuple[str, str], int]:
        """The gateways' ids (remembered, or read); ``unknown-gateway`` for one that is not
        registered."""
        ids: dict[tuple[str, str], int] = {}
        for index, message in enumerate(messages):
            key = (message.site, message.gateway)
            if key in ids:
                continue
            gateway_id = self._known.gateways.get(key)
            if gateway_id is None:
                async with self._sessions() as session:
                    gateway_id = await session.scalar(
                        select(Gateway.id)
                        .join(Site)
                        .where(Site.name == message.site, Gateway.name == message.gateway)
                    )
                if gateway_id is None:
                    raise _Refused(
                        index,
                        Rejected(
                            "unknown-gateway",
                            f"gateway {message.gateway!r} of site {message.site!r} "
                            "is not registered",
                        ),
                    )
                self._known.gateways[key] = gateway_id
            ids[key] = gateway_id
        return ids

    async def _one(
        self, session: AsyncSession, writer: Writer, index: int, gateway_id: int, message: Message
    ) -> Batch:
        """One message into the transaction; :class:`_Refused` when it is refused."""
        try:
            route = self.routes.get(message.kind)
            if route is not None:
                ref = GatewayRef(gateway_id, message.site, message.gateway)
                await route(session, ref, message.payload)
                return Batch()
            if message.point_map is not None:
                await store_map(session, self.maps, gateway_id, message.point_map, writer.now)
            return await writer.store(gateway_id, message.kind, message.payload)
        except Rejected as rejected:
            raise _Refused(index, rejected) from None
        except DataError as exc:  # a value the checks missed, the database refused
            raise _Refused(
                index, Rejected("schema", f"the database refused it: {exc.orig}")
            ) from None
        except (SQLAlchemyError, OSError):
            raise  # the database's trouble, not the message's
        except Exception as exc:  # a value the checks missed that the driver could not take
            refused = Rejected("schema", f"could not be stored: {type(exc).__name__}: {exc}")
            raise _Refused(index, refused) from None

    async def _reject(self, topic: str, size: int, kind: str | None, rejected: Rejected) -> Outcome:
        self._rejected[rejected.reason] += 1
        self.metrics.handled(kind, "rejected", reason=rejected.reason)
        self._rejection_log.warn(topic, rejected)
        await store_rejection(self._sessions, topic, size, rejected)
        return Outcome("rejected", kind, rejected.reason, rejected.detail)

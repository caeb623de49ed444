"""Ingest: one gateway message checked and stored in ONE transaction, or refused.

:meth:`Ingest.handle` checks a message (topic + payload) against the wire contract
(:mod:`fleet.ingest.checks`) and the registered gateways, and has the writer
(:mod:`fleet.ingest.writer`) store it in one transaction, so a crash mid-message never
leaves half a batch behind. A batch seen before is a duplicate, stored once.

Messages that are not telemetry (a gateway's configuration status, its OTA status, …) go to
the :data:`Route` their area registered for the kind (``Ingest(routes=…)``, composed in
:mod:`fleet.app`): checked against the wire contract like the rest, then handed with the
gateway's row id inside the same transaction.

Bad input never raises: it is rejected with a reason (:data:`~fleet.ingest.checks.REASONS`),
counted, and logged and stored by the rejection log (:mod:`fleet.ingest.rejections`); ingest
goes on. The database's own trouble does raise: the feed (:mod:`fleet.ingest.pipeline`)
holds the message until the database is back.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.core.metrics import FleetMetrics
from fleet.errors import Rejected
from fleet.ingest.checks import Limits, decode
from fleet.ingest.known import Known
from fleet.ingest.rejections import RejectionLog, store_rejection
from fleet.ingest.sequences import Batch
from fleet.ingest.writer import Writer
from fleet.models import Gateway, Site, utcnow
from gateway import wire


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
        logged and stored (IngestRejection) reason (:data:`~fleet.ingest.checks.REASONS`)."""
        try:
            site, gateway, kind, message = decode(topic, payload, self.routes)
        except Rejected as rejected:
            return await self._reject(topic, payload, None, rejected)
        try:
            async with self._lock:
                started = time.perf_counter()
                batch = await self._store(site, gateway, kind, message)
                write_s = time.perf_counter() - started
        except Rejected as rejected:
            return await self._reject(topic, payload, kind, rejected)
        except (SQLAlchemyError, OSError):
            raise  # the database's trouble, not the message's: feed holds or logs it
        except Exception as exc:  # a value the checks missed that the driver could not take
            refused = Rejected("schema", f"could not be stored: {type(exc).__name__}: {exc}")
            return await self._reject(topic, payload, kind, refused)
        if batch.duplicate:
            self._duplicates += 1
            self.metrics.handled(kind.value, "duplicate", write_s=write_s)
            return Outcome("duplicate", kind.value)
        self._accepted[kind.value] += 1
        self._gaps_opened += batch.gaps_opened
        at = getattr(message, "at", None)
        self.metrics.handled(
            kind.value, "stored", write_s=write_s,
            lag_s=None if at is None else time.time() - at,
            readings=len(message.readings) if isinstance(message, wire.TelemetryBatch) else 0,
        )  # fmt: skip
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
            route = self.routes.get(kind)
            if route is not None:
                await route(session, GatewayRef(gateway_id, site, gateway), message)
                return Batch()
            writer = Writer(session, gateway_id, utcnow(), self._known, self.limits)
            return await writer.store(kind, message)

    async def _reject(
        self, topic: str, payload: bytes, kind: wire.Kind | None, rejected: Rejected
    ) -> Outcome:
        self._rejected[rejected.reason] += 1
        self.metrics.handled(
            None if kind is None else kind.value, "rejected", reason=rejected.reason
        )
        self._rejection_log.warn(topic, rejected)
        await store_rejection(self._sessions, topic, len(payload), rejected)
        return Outcome(
            "rejected", None if kind is None else kind.value, rejected.reason, rejected.detail
        )

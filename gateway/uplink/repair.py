"""Gap repair, the gateway's side: the fleet asks for batch numbers it is missing
(``repair/request``, :mod:`gateway.wire.repair`); each batch the outbox still keeps is
published again on its own topic, unchanged, and a ``repair/report`` says how many were
sent again and which ranges are lost (no longer kept)."""

from __future__ import annotations

import logging

from gateway import wire
from gateway.uplink.inbox import Inbox
from gateway.uplink.outbox_thread import OutboxThread
from gateway.wire.repair import MAX_RANGES, BatchRange, RepairReport, RepairRequest

log = logging.getLogger(__name__)


class Repairer:
    """Answers the fleet's repair requests from the outbox's kept batches."""

    def __init__(self, outbox: OutboxThread, inbox: Inbox) -> None:
        self.outbox = outbox
        self.inbox = inbox

    def install(self) -> None:
        """Handle ``repair/request`` (before the uplink connects)."""
        self.inbox.handle(wire.Kind.REPAIR_REQUEST, self.handle)

    async def handle(self, payload: bytes) -> None:
        try:
            request = wire.decode(RepairRequest, payload)
        except wire.WireError as exc:
            log.warning("uplink: a repair request refused: %s", exc)
            return
        if not self.outbox.is_open:
            return  # asked again by the fleet once the uplink runs
        kind = wire.Kind(request.kind)
        resent = 0
        lost: list[BatchRange] = []
        for first, last in request.ranges:
            kept, gone = await self.outbox.run(self.outbox.outbox.sent, request.kind, first, last)
            for batch in kept:
                if not await self.inbox.send(kind, batch.payload):
                    return  # the connection went: the fleet asks again
                resent += 1
            lost.extend(gone)
        if lost:
            log.warning(
                "uplink: %s batches %s asked for again are no longer kept",
                request.kind,
                ", ".join(f"{a}-{b}" for a, b in lost[:5]) + ("…" if len(lost) > 5 else ""),
            )
        report = RepairReport(
            request=request.id, kind=request.kind, resent=resent, lost=lost[:MAX_RANGES]
        )
        await self.inbox.send(wire.Kind.REPAIR_REPORT, wire.encode(report))

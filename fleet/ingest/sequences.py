"""The batch numbers of one gateway: duplicates, gaps and restarted numberings (epochs).

Sequence numbers per gateway and kind (telemetry, events) start at 1 and have no holes. Each
received number is recorded (:class:`~fleet.models.ReceivedBatch`); a number seen before is a
duplicate and nothing of its batch is stored twice. A number beyond the highest stored + 1
opens a :class:`~fleet.models.Gap` of the missing ones; a later arrival inside an open gap
shrinks it, splits it in two, or closes it (``closed_at``) when it was the last one missing.
Whatever order the batches arrive in, the open gaps end up as the runs of numbers missing
below the highest stored.

A gateway replaced or re-imaged under the same name (a new outbox) starts again at 1. A number
already stored with another ``sent_at`` or size is such a restart, not a duplicate: logged at
WARNING, the old numbering's open gaps are closed and the batch starts the next ``epoch`` (its
gaps counted from 1 again). The same number with the same ``sent_at`` and size, in any epoch,
is a duplicate. A number more than ``max_step`` beyond the highest stored is refused
(``sequence``): it would open a gap of billions.

Everything is read from the database, inside the batch's transaction, with the gateway's
writers serialised (:func:`fleet.ingest.locks.lock_gateways`): any number of fleet workers
may receive a gateway's batches in any order. The current epoch and highest number are read
once per transaction and kind (for all its gateways at once: :meth:`Sequences.prefetch`),
then kept up to date by this transaction's own batches (no other writer can move them while
the lock is held). A number beyond the highest of a numbering that never restarted needs no
statement to be decided; such numbers are recorded together (:meth:`Sequences.flush`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from fleet.errors import Rejected
from fleet.ingest import bulk
from fleet.ingest.upsert import upsert
from fleet.models import Base, BatchKind, Gap, Gateway, ReceivedBatch

log = logging.getLogger(__name__)
#: A batch number at most this far beyond the highest stored one (a number near 2**63 would
#: open a gap nobody could ever fill); configured by fleet.ingest.checks.Limits.
MAX_STEP = 1_000_000
RECEIVED = Base.metadata.tables[ReceivedBatch.__tablename__]
RECEIVED_COLUMNS = ("gateway_id", "kind", "epoch", "seq", "received_at", "sent_at", "size")


@dataclass
class Batch:
    """What storing one message did."""

    duplicate: bool = False
    gaps_opened: int = 0


class Sequences:
    """Records batch numbers inside one transaction that holds the gateways' locks."""

    def __init__(self, session: AsyncSession, now: datetime, max_step: int = MAX_STEP) -> None:
        self.session = session
        self.now = now
        self.max_step = max_step
        #: (gateway id, kind) -> (current epoch, highest number in it), as this transaction
        #: read and moved it
        self._current: dict[tuple[int, str], tuple[int, int]] = {}
        #: batch numbers to record (:meth:`flush`)
        self._new: list[tuple[int, str, int, int, datetime, datetime, int]] = []

    async def receive(
        self, gateway_id: int, kind: BatchKind, seq: int, sent_at: datetime, size: int
    ) -> Batch:
        """Record batch ``seq``; a duplicate, or the gaps it opened, or the gap it filled; or
        the first of a restarted numbering (the next epoch)."""
        epoch, highest = await self.current(gateway_id, kind)
        if epoch == 0 and highest < seq <= highest + self.max_step:
            # The common case, decided without a statement: a number beyond the highest of
            # a numbering that never restarted (no older epoch it could be a replay of). It
            # is recorded with the others at the end (:meth:`flush`).
            self._new.append((gateway_id, kind.value, 0, seq, self.now, sent_at, size))
            return self._moved(gateway_id, kind, 0, highest, seq)
        await self.flush()  # what follows reads the recorded numbers
        if epoch > 0 and await self.replayed(gateway_id, kind, seq, sent_at, size):
            return Batch(duplicate=True)
        if seq > highest + self.max_step:
            raise Rejected(
                "sequence",
                f"{kind.value} batch {seq}: {seq - highest} beyond the highest stored ({highest}); "
                f"at most {self.max_step}",
            )
        if not await self.insert(gateway_id, kind, epoch, seq, sent_at, size):
            stored = (
                await self.session.execute(
                    select(ReceivedBatch.sent_at, ReceivedBatch.size).where(
                        ReceivedBatch.gateway_id == gateway_id,
                        ReceivedBatch.kind == kind.value,
                        ReceivedBatch.epoch == epoch,
                        ReceivedBatch.seq == seq,
                    )
                )
            ).one()
            if tuple(stored) == (sent_at, size):
                return Batch(duplicate=True)
            epoch, highest = await self.restart(gateway_id, kind, epoch, seq), 0
            await self.insert(gateway_id, kind, epoch, seq, sent_at, size)
        batch = self._moved(gateway_id, kind, epoch, highest, seq)
        if seq < highest:
            await self.fill(gateway_id, kind, epoch, seq)
        return batch

    def _moved(self, gateway_id: int, kind: BatchKind, epoch: int, highest: int, seq: int) -> Batch:
        """Batch ``seq`` recorded in ``epoch`` whose highest was ``highest``: the gap it
        opened, if any."""
        self._current[(gateway_id, kind.value)] = (epoch, max(highest, seq))
        if seq > highest + 1:
            self.session.add(
                Gap(
                    gateway_id=gateway_id,
                    kind=kind.value,
                    epoch=epoch,
                    first=highest + 1,
                    last=seq - 1,
                    detected_at=self.now,
                )
            )
            return Batch(gaps_opened=1)
        return Batch()

    async def flush(self) -> None:
        """Record the numbers decided without a statement (all in one)."""
        if not self._new:
            return
        new, self._new = self._new, []
        if bulk.postgresql(self.session):
            await bulk.copy(self.session, RECEIVED, RECEIVED_COLUMNS, new)
        else:
            await self.session.execute(
                insert(RECEIVED), [dict(zip(RECEIVED_COLUMNS, row, strict=True)) for row in new]
            )

    async def prefetch(self, gateway_ids: Collection[int], kind: BatchKind) -> None:
        """Read the current epoch and highest number of several gateways in one statement
        (a transaction of many gateways' batches), as :meth:`current` would one by one."""
        last, top = aliased(ReceivedBatch), aliased(ReceivedBatch)
        epoch = (
            select(func.max(last.epoch))
            .where(last.gateway_id == Gateway.id, last.kind == kind.value)
            .correlate(Gateway)
            .scalar_subquery()
        )
        highest = (
            select(func.max(top.seq))
            .where(top.gateway_id == Gateway.id, top.kind == kind.value, top.epoch == epoch)
            .correlate(Gateway)
            .scalar_subquery()
        )
        rows = await self.session.execute(
            select(Gateway.id, epoch, highest).where(Gateway.id.in_(sorted(gateway_ids)))
        )
        for gateway_id, current, seq in rows:
            self._current.setdefault((gateway_id, kind.value), (current or 0, seq or 0))

    async def current(self, gateway_id: int, kind: BatchKind) -> tuple[int, int]:
        """The gateway's current epoch for ``kind`` and the highest number stored in it."""
        known = self._current.get((gateway_id, kind.value))
        if known is not None:
            return known
        row = (
            await self.session.execute(
                select(ReceivedBatch.epoch, ReceivedBatch.seq)
                .where(ReceivedBatch.gateway_id == gateway_id, ReceivedBatch.kind == kind.value)
                .order_by(ReceivedBatch.epoch.desc(), ReceivedBatch.seq.desc())
                .limit(1)
            )
        ).first()
        current = (0, 0) if row is None else (row[0], row[1])
        self._current[(gateway_id, kind.value)] = current
        return current

    async def replayed(
        self, gateway_id: int, kind: BatchKind, seq: int, sent_at: datetime, size: int
    ) -> bool:
        """Whether this very batch (number, time and size) is stored in any epoch."""
        rows = await self.session.execute(
            select(ReceivedBatch.sent_at, ReceivedBatch.size).where(
                ReceivedBatch.gateway_id == gateway_id,
                ReceivedBatch.kind == kind.value,
                ReceivedBatch.seq == seq,
            )
        )
        return any(tuple(row) == (sent_at, size) for row in rows)

    async def insert(
        self, gateway_id: int, kind: BatchKind, epoch: int, seq: int, sent_at: datetime, size: int
    ) -> bool:
        """Record the batch's number; False when it is taken in ``epoch`` already."""
        stored = await self.session.execute(
            upsert(self.session, ReceivedBatch)
            .values(
                gateway_id=gateway_id,
                kind=kind.value,
                epoch=epoch,
                seq=seq,
                received_at=self.now,
                sent_at=sent_at,
                size=size,
            )
            .on_conflict_do_nothing()
            .returning(ReceivedBatch.seq)
        )
        return stored.scalar_one_or_none() is not None

    async def restart(self, gateway_id: int, kind: BatchKind, epoch: int, seq: int) -> int:
        """The gateway numbers its batches from 1 again (a new outbox): what was missing of
        the old numbering will not come any more. The new epoch."""
        gateway = await self.session.scalar(select(Gateway.name).where(Gateway.id == gateway_id))
        log.warning(
            "gateway %r (id %d) %s: sequence restarted at %d: new outbox? "
            "Open gaps of the old numbering closed",
            gateway,
            gateway_id,
            kind.value,
            seq,
        )
        await self.session.execute(
            update(Gap)
            .where(
                Gap.gateway_id == gateway_id,
                Gap.kind == kind.value,
                Gap.closed_at.is_(None),
            )
            .values(closed_at=self.now)
        )
        return epoch + 1

    async def fill(self, gateway_id: int, kind: BatchKind, epoch: int, seq: int) -> None:
        """A late batch arrived: shrink, split or close the open gap it was missing from."""
        gap = await self.session.scalar(
            select(Gap).where(
                Gap.gateway_id == gateway_id,
                Gap.kind == kind.value,
                Gap.epoch == epoch,
                Gap.closed_at.is_(None),
                Gap.first <= seq,
                Gap.last >= seq,
            )
        )
        if gap is None:
            return
        if gap.first == gap.last:
            gap.closed_at = self.now
        elif seq == gap.first:
            gap.first += 1
        elif seq == gap.last:
            gap.last -= 1
        else:
            self.session.add(
                Gap(
                    gateway_id=gateway_id,
                    kind=kind.value,
                    epoch=epoch,
                    first=seq + 1,
                    last=gap.last,
                    detected_at=gap.detected_at,
                )
            )
            gap.last = seq - 1

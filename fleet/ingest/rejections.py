"""The rejection log: what ingest refused, as a WARNING and as a stored row.

The WARNING names the topic, the reason and the detail, at most once per (topic, reason)
every :data:`REJECTION_LOG_EVERY_S` (:class:`RejectionLog`); every rejection is also kept as
an :class:`~fleet.models.IngestRejection` (:func:`store_rejection`), its text made safe for
its columns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.errors import Rejected
from fleet.models import IngestRejection, utcnow

log = logging.getLogger(__name__)

TOPIC_COLUMN = 300
DETAIL_COLUMN = 2000  # what is kept of a rejection's detail
#: After a rejection's WARNING, the same topic and reason is logged again after this at most.
REJECTION_LOG_EVERY_S = 60.0
#: How many (topic, reason) pairs RejectionLog keeps before it forgets the old ones.
REJECTION_LOG_KEYS = 10_000


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


async def store_rejection(
    sessions: async_sessionmaker[AsyncSession], topic: str, size: int, rejected: Rejected
) -> None:
    """Keep the rejection of a message of ``size`` bytes on ``topic``; a database that cannot
    take it is logged, not raised (the message is refused either way)."""
    try:
        async with sessions.begin() as session:
            session.add(
                IngestRejection(
                    at=utcnow(),
                    topic=printable(topic, TOPIC_COLUMN),
                    reason=rejected.reason,
                    detail=printable(rejected.detail, DETAIL_COLUMN),
                    size=size,
                )
            )
    except SQLAlchemyError as exc:
        log.error("could not store the rejection of %r: %s", topic, exc)


def printable(value: str, limit: int | None = None) -> str:
    """``value`` safe to store in a text column (for rejections: what was refused)."""
    cleaned = value.replace("\x00", "\\x00").encode(errors="backslashreplace").decode()
    return cleaned if limit is None else cleaned[:limit]

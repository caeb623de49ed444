"""The uplink's outbox on one dedicated thread.

A ``synchronous=FULL`` commit of the outbox (:mod:`gateway.uplink.outbox`) is an fsync, a few
ms on an SD card, which must not delay the control loop sharing the event loop; and an
:class:`~gateway.uplink.outbox.Outbox` is not thread-safe. So every call to it runs on one
thread of its own, in submission order: the producer's appends, the drain's peeks and
deletes, the pruning. That thread runs below the control path and above ordinary processes
(:func:`gateway.priority.background_executor`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

from gateway.priority import background_executor
from gateway.uplink.outbox import Outbox, Synchronous

T = TypeVar("T")


class OutboxThread:
    """Owns the outbox and the one thread that uses it; ``appended`` is set whenever rows
    were appended (the drain waits on it)."""

    def __init__(self) -> None:
        self._executor = background_executor(1, "outbox")
        self._outbox: Outbox | None = None
        self.appended = asyncio.Event()

    async def open(
        self,
        path: Path,
        *,
        max_rows: int,
        max_age_s: float,
        last_to_drop: tuple[str, ...],
        synchronous: Synchronous,
        keep_sent_rows: int = 20_000,
        keep_sent_s: float = 86400.0,
    ) -> None:
        """Open (or create) the outbox file and enforce its bounds once."""
        outbox = await self.run(
            partial(
                Outbox,
                path,
                max_rows=max_rows,
                max_age_s=max_age_s,
                last_to_drop=last_to_drop,
                synchronous=synchronous,
                keep_sent_rows=keep_sent_rows,
                keep_sent_s=keep_sent_s,
            )
        )
        self._outbox = outbox
        await self.run(outbox.prune)

    @property
    def is_open(self) -> bool:
        return self._outbox is not None

    @property
    def outbox(self) -> Outbox:
        """The outbox, to hand its methods to :meth:`run` or :meth:`submit` (only there)."""
        assert self._outbox is not None, "the outbox is used after open()"
        return self._outbox

    @property
    def depth(self) -> int:
        """Messages waiting for the broker (0 before the outbox is open)."""
        return 0 if self._outbox is None else self._outbox.depth

    @property
    def dropped(self) -> int:
        """Messages the outbox's bounds dropped."""
        return 0 if self._outbox is None else self._outbox.dropped

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on the outbox thread."""
        return await self.submit(fn, *args)

    def submit(self, fn: Callable[..., T], *args: object) -> asyncio.Future[T]:
        """``fn(*args)`` on the outbox thread, without waiting for it."""
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def close(self) -> None:
        """Close the outbox (what was not acknowledged stays in it) and stop the thread."""
        if self._outbox is not None:
            await self.run(self._outbox.close)
        self._executor.shutdown(wait=True)

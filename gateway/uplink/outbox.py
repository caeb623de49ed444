"""The durable outbox: messages waiting for the broker's acknowledgement, in SQLite (WAL).

Every telemetry batch and event batch is written here before it is published, and deleted
only after the broker acknowledged it (QoS 1 PUBACK), so a broker outage or a ``kill -9`` of
the gateway loses nothing and reorders nothing: the uplink drains rows in ``id`` order and
starts again from the oldest unacknowledged row after every reconnect.

Sequence numbers. Each kind (``telemetry``, ``events``) has its own per-gateway counter in the
``meta`` table. :meth:`Outbox.append` allocates the next number and inserts the row in ONE
transaction, so a number is never used twice, never skipped by a crash, and a restart
continues the sequence. The fleet drops duplicates by number and detects gaps.

Durability. WAL mode; ``synchronous=FULL`` by default, so every commit is on disk when
:meth:`append` returns. Any committed transaction survives a ``kill -9`` whatever the setting
(it is in the WAL file, which the OS writes out); ``FULL`` also keeps it through a power cut.
With ``NORMAL`` a power cut may roll back the last commits, and with them the sequence
counter: numbers already published would then be reused for new batches, which the fleet
would drop as duplicates. On this project's reference VM a ``FULL`` commit costs ~0.3 ms, on
a Raspberry Pi SD card several ms, which is why the uplink calls the outbox from one
dedicated thread rather than from the event loop (see ``gateway.uplink.outbox_thread``).

Retention. The broker's PUBACK is not the fleet's: a broker may drop what it queued (a queue
limit, a fail-over). Acknowledged numbered batches are kept in ``sent`` (at most
``keep_sent_rows``, none older than ``keep_sent_s``; 0 rows: none kept) so the fleet can ask
for a range it is missing (:meth:`Outbox.sent`); what is no longer kept is reported as lost.

Bounds. At most ``max_rows`` rows and none older than ``max_age_s`` (wall clock, so the
bound holds across restarts). Kinds named in ``last_to_drop`` (the uplink names ``events``:
alarms) are dropped only when the other kinds alone cannot bring the outbox within bounds;
within that order the oldest rows go first. Every dropped row is counted in ``dropped``,
which the uplink reports in its health message.

An ``Outbox`` is not thread-safe: use it from one thread at a time (``depth`` and
``dropped`` are kept in memory and may be read from anywhere).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from gateway.errors import OutboxError

Synchronous = Literal["full", "normal"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sent (
    kind TEXT NOT NULL,
    seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    sent_at REAL NOT NULL,
    PRIMARY KEY (kind, seq)
);
"""
DROPPED = "dropped"


@dataclass(frozen=True, slots=True)
class Sent:
    """A batch the broker acknowledged, kept for the fleet to ask for again."""

    kind: str
    seq: int
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Row:
    """One message waiting for the broker."""

    id: int
    kind: str
    topic: str
    payload: bytes
    created_at: float  # wall clock, seconds since the epoch


class Outbox:
    """Messages in publication order, with per-kind sequence counters and a drop count."""

    def __init__(
        self,
        path: Path,
        *,
        max_rows: int = 100_000,
        max_age_s: float = 7 * 86400,
        last_to_drop: Collection[str] = (),
        synchronous: Synchronous = "full",
        clock: Callable[[], float] = time.time,
        keep_sent_rows: int = 20_000,
        keep_sent_s: float = 86400.0,
    ) -> None:
        if max_rows < 1 or max_age_s <= 0:
            raise ValueError(f"outbox bounds: max_rows={max_rows}, max_age_s={max_age_s}")
        if keep_sent_rows < 0 or keep_sent_s < 0:
            raise ValueError(
                f"outbox retention: keep_sent_rows={keep_sent_rows}, keep_sent_s={keep_sent_s}"
            )
        self.path = path
        self.max_rows = max_rows
        self.max_age_s = max_age_s
        self.keep_sent_rows = keep_sent_rows
        self.keep_sent_s = keep_sent_s
        self._last_to_drop = tuple(last_to_drop)
        self._clock = clock
        self._synchronous = synchronous
        try:
            # One thread at a time, but not necessarily the one that opened it (the uplink
            # opens it from the event loop's thread and works from its own).
            # the owner's alone (0600), like every file of the gateway's state
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            path.chmod(0o600)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
            if "seq" not in columns:  # an outbox from before the retention of sent batches
                self._db.execute("ALTER TABLE outbox ADD COLUMN seq INTEGER")
            self._depth: int = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            self._dropped = self._meta(DROPPED)
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {path}: cannot open ({exc})") from None

    # -- context manager -------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    # -- writing ---------------------------------------------------------------------------

    def append(
        self,
        kind: str,
        topic: str,
        make_payload: Callable[[int], bytes],
        *,
        source: tuple[str, int] | None = None,
    ) -> int | None:
        """Allocate the next sequence number of ``kind``, build the payload with it and store
        the row, in one transaction; return the number.

        If ``make_payload`` raises, nothing is stored and the number is not used. ``source``
        makes the append idempotent: ``(name, n)`` is recorded with the row, and an append
        whose ``n`` is not above the last one recorded for ``name`` is skipped (returns
        None); the uplink uses it so that replaying the alarm journal enqueues each alarm
        once. If the outbox is full, the oldest rows are dropped in the same transaction.
        """
        with self._transaction():
            if source is not None:
                name, n = source
                if n <= self._meta(f"source:{name}"):
                    return None
                self._set_meta(f"source:{name}", n)
            seq = self._meta(f"seq:{kind}") + 1
            payload = make_payload(seq)
            self._db.execute(
                "INSERT INTO outbox (kind, topic, payload, created_at, seq) VALUES (?, ?, ?, ?, ?)",
                (kind, topic, payload, self._clock(), seq),
            )
            self._set_meta(f"seq:{kind}", seq)
            self._depth += 1
            if self._depth > self.max_rows:
                self._drop_oldest(self._depth - self.max_rows)
        return seq

    def ack(self, *ids: int) -> None:
        """Delete rows the broker acknowledged (ids already gone are ignored).

        The delete is committed with ``synchronous=NORMAL`` whatever the setting: it survives
        a ``kill -9`` all the same, and one lost to a power cut only sends those rows again
        (same payload, same sequence number), which the fleet drops as duplicates. The next
        ``FULL`` commit writes it to disk along with its own."""
        if not ids:
            return
        full = self._synchronous == "full"
        if full:
            self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            with self._transaction():
                if self.keep_sent_rows:
                    self._keep_sent(ids)
                cur = self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
                self._depth -= cur.rowcount
        finally:
            if full:
                self._db.execute("PRAGMA synchronous=FULL")

    def prune(self, now: float | None = None) -> int:
        """Enforce both bounds; return how many rows were dropped (and counted)."""
        now = self._clock() if now is None else now
        with self._transaction():
            before = self._depth
            oldest = self._db.execute(
                "SELECT created_at FROM outbox ORDER BY id LIMIT 1"
            ).fetchone()
            if oldest is not None and oldest[0] < now - self.max_age_s:
                cur = self._db.execute(
                    "DELETE FROM outbox WHERE created_at < ?", (now - self.max_age_s,)
                )
                self._depth -= cur.rowcount
                self._count_drops(cur.rowcount)
            if self._depth > self.max_rows:
                self._drop_oldest(self._depth - self.max_rows)
            self._db.execute("DELETE FROM sent WHERE sent_at < ?", (now - self.keep_sent_s,))
            return before - self._depth

    def sent(self, kind: str, first: int, last: int) -> tuple[list[Sent], list[tuple[int, int]]]:
        """The acknowledged batches of ``kind`` numbered ``first``..``last`` that are still
        kept, oldest first, and the ranges of those no longer kept (or never sent: still
        waiting in the outbox, they will come anyway and are not listed)."""
        rows = self._db.execute(
            "SELECT seq, topic, payload FROM sent WHERE kind = ? AND seq BETWEEN ? AND ?"
            " ORDER BY seq",
            (kind, first, last),
        ).fetchall()
        waiting = {
            seq
            for (seq,) in self._db.execute(
                "SELECT seq FROM outbox WHERE kind = ? AND seq BETWEEN ? AND ?",
                (kind, first, last),
            )
        }
        kept = [Sent(kind, seq, topic, bytes(payload)) for seq, topic, payload in rows]
        end = min(last, self.last_seq(kind))  # numbers not allocated yet are not lost
        lost: list[tuple[int, int]] = []
        expected = first
        for seq in sorted(waiting | {s.seq for s in kept}):
            if seq > expected:
                lost.append((expected, min(seq - 1, end)))
            expected = seq + 1
        if expected <= end:
            lost.append((expected, end))
        return kept, lost

    # -- reading ---------------------------------------------------------------------------

    def peek(self, n: int, after: int = 0) -> list[Row]:
        """Up to ``n`` rows with ``id > after``, oldest first."""
        rows = self._db.execute(
            "SELECT id, kind, topic, payload, created_at FROM outbox"
            " WHERE id > ? ORDER BY id LIMIT ?",
            (after, n),
        ).fetchall()
        return [Row(i, k, t, bytes(p), c) for i, k, t, p, c in rows]

    @property
    def depth(self) -> int:
        """Rows waiting for the broker."""
        return self._depth

    @property
    def dropped(self) -> int:
        """Rows dropped by the bounds since the outbox was created."""
        return self._dropped

    def last_seq(self, kind: str) -> int:
        """The last sequence number allocated for ``kind`` (0 before the first)."""
        return self._meta(f"seq:{kind}")

    def last_source(self, name: str) -> int:
        """The last ``n`` recorded by an append with ``source=(name, n)`` (0 before any)."""
        return self._meta(f"source:{name}")

    def restart_source(self, name: str) -> None:
        """Forget the last ``n`` of ``name``: its numbering started again from 1 (its
        journal was deleted), and appends below the old mark must not be skipped."""
        with self._transaction():
            self._db.execute("DELETE FROM meta WHERE key = ?", (f"source:{name}",))

    # -- internals -------------------------------------------------------------------------

    def _keep_sent(self, ids: tuple[int, ...]) -> None:
        """Keep acknowledged batches (numbered rows) for the fleet to ask for again; the
        oldest go beyond ``keep_sent_rows``."""
        self._db.executemany(
            "INSERT OR REPLACE INTO sent (kind, seq, topic, payload, sent_at)"
            " SELECT kind, seq, topic, payload, ? FROM outbox WHERE id = ? AND seq IS NOT NULL",
            [(self._clock(), i) for i in ids],
        )
        kept = self._db.execute("SELECT COUNT(*) FROM sent").fetchone()[0]
        if kept > self.keep_sent_rows:
            self._db.execute(
                "DELETE FROM sent WHERE rowid IN"
                " (SELECT rowid FROM sent ORDER BY sent_at, seq LIMIT ?)",
                (kept - self.keep_sent_rows,),
            )

    def _drop_oldest(self, n: int) -> None:
        """Delete ``n`` rows: the oldest of the ordinary kinds first, then the oldest of all."""
        if self._last_to_drop:
            marks = ", ".join("?" * len(self._last_to_drop))
            n -= self._delete(
                f"SELECT id FROM outbox WHERE kind NOT IN ({marks}) ORDER BY id LIMIT ?",  # noqa: S608
                (*self._last_to_drop, n),
            )
        if n > 0:
            self._delete("SELECT id FROM outbox ORDER BY id LIMIT ?", (n,))

    def _delete(self, select: str, args: tuple[object, ...]) -> int:
        cur = self._db.execute(f"DELETE FROM outbox WHERE id IN ({select})", args)  # noqa: S608
        self._depth -= cur.rowcount
        self._count_drops(cur.rowcount)
        return cur.rowcount

    def _count_drops(self, n: int) -> None:
        if n:
            self._dropped += n
            self._set_meta(DROPPED, self._dropped)

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return 0 if row is None else int(row[0])

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; on any error ``ROLLBACK`` and restore the depth."""
        depth, dropped = self._depth, self._dropped
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self.path}: {exc}") from None
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            self._depth, self._dropped = depth, dropped
            if isinstance(exc, sqlite3.Error):
                raise OutboxError(f"outbox {self.path}: {exc}") from None
            raise

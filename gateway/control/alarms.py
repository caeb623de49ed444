"""Alarms: raised, updated and cleared events with severity, kept by the gateway for the uplink.

Every event is appended to a JSON-lines journal (fsync'd, so a power cut loses nothing that
was written), and the set of active alarms is rebuilt from it on start: an alarm that was
active when the gateway stopped is still active when it comes back. ``gateway alarms`` reads
the same journal. In ``gateway run`` the journal is written behind (``write_behind``), in
order, by a thread of its own: an fsync can take a second on an SD card busy with a backup,
and the control loop, which raises the alarms, must not wait for it.

Alarm management after ISA-18.2 / EEMUA 191: an alarm needs a person's response, so

* one cause gives one alarm — an alarm that exists only because another one's cause holds
  (an interlock's input lost because its device is offline) is *suppressed* by it
  (``suppressed_by`` names the parent); it stays in the journal, and a screen shows it under
  its parent instead of as an alarm of its own;
* a chattering alarm — raised more than ``Chatter.max_raises`` times within
  ``Chatter.window_s`` — is held raised, with its count, until it has been quiet for
  ``Chatter.quiet_s``; a person sees one alarm that says it keeps coming back;
* an alarm whose text or values change while it stands (a counter, the list of interlocks
  its cause holds) is *updated* in place, not raised again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field

from gateway.devices.codec import Value
from gateway.priority import background_executor
from gateway.validation import Strict


class Severity(StrEnum):
    CRITICAL = "critical"  # P1: people at risk (fire, trapped passenger)
    MAJOR = "major"  # equipment locked out or out of service
    MINOR = "minor"  # degraded: derating, curtailment, a device offline
    INFO = "info"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


EventKind = Literal["raised", "updated", "cleared"]
SCHEMA_VERSION = 1


class Chatter(Strict):
    """When an alarm chatters: more than ``max_raises`` raises within ``window_s``; it is
    then held raised until quiet (no new raise) for ``quiet_s``. The site config's
    ``[alarms]`` table."""

    model_config = ConfigDict(frozen=True)

    max_raises: int = Field(default=3, ge=1, le=100)
    window_s: float = Field(default=600.0, gt=0, le=86400)
    quiet_s: float = Field(default=300.0, ge=0, le=86400)


@dataclass(frozen=True)
class AlarmEvent:
    """One change of an alarm. ``key`` names the alarm (interlock, and device if any)."""

    seq: int
    kind: EventKind
    key: str
    severity: Severity
    interlock: str
    device: str | None
    message: str
    values: dict[str, Value] = field(default_factory=dict)
    at: float = field(default_factory=time.time)  # wall clock, seconds since the epoch
    by: str | None = None  # who cleared it, for resets
    v: int = SCHEMA_VERSION
    #: The key of the alarm whose cause this one only follows from (see the module doc).
    suppressed_by: str | None = None
    #: How often it was raised in the chatter window (> 1: it keeps coming back).
    count: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> AlarmEvent:
        data = json.loads(line)
        data["severity"] = Severity(data["severity"])
        return cls(**data)


class AlarmLog:
    """Active alarms and the journal of every change. ``listeners`` (the uplink) get every
    new event once the journal has it. Call :meth:`tick` now and then (the control loop
    does) so held chattering alarms clear once quiet."""

    def __init__(
        self,
        journal: Path | None = None,
        *,
        chatter: Chatter | None = None,
        clock: Callable[[], float] = time.monotonic,
        write_behind: bool = False,
    ) -> None:
        self.journal = journal
        self._writer = background_executor(1, "alarm-journal") if write_behind and journal else None
        self._written: Future[None] | None = None
        self.chatter = chatter or Chatter()
        self.listeners: list[Callable[[AlarmEvent], None]] = []
        self.active: dict[str, AlarmEvent] = {}
        self.recent: list[AlarmEvent] = []
        self._seq = 0
        self._clock = clock
        self._raises: dict[str, deque[float]] = {}  # key -> monotonic times of recent raises
        self._held: dict[str, str | None] = {}  # key -> who cleared it, while held raised
        if journal is not None and journal.exists():
            for event in read_journal(journal):
                self._apply(event)
                self._seq = max(self._seq, event.seq)

    def raise_(
        self,
        key: str,
        severity: Severity,
        interlock: str,
        message: str,
        *,
        device: str | None = None,
        values: dict[str, Value] | None = None,
        suppressed_by: str | None = None,
    ) -> AlarmEvent | None:
        """Raise an alarm; None if it is already active (raised once, not every cycle). A
        held chattering alarm raised again stays the one alarm, its count going up."""
        if key in self.active and key not in self._held:
            return None
        count = self._count_raise(key)
        if key in self._held:
            del self._held[key]
            return self.update(key, count=count)
        event = AlarmEvent(
            0,
            "raised",
            key,
            severity,
            interlock,
            device,
            message,
            values or {},
            suppressed_by=suppressed_by,
            count=count,
        )
        return self._record(event)

    def update(self, key: str, **changes: Any) -> AlarmEvent | None:
        """Change a standing alarm's message, values, suppression or count; None if it is not
        active or nothing changes."""
        old = self.active.get(key)
        if old is None:
            return None
        new = dataclasses.replace(old, kind="updated", **changes)
        if dataclasses.replace(new, kind=old.kind) == old:
            return None
        return self._record(new)

    def clear(self, key: str, *, by: str | None = None) -> AlarmEvent | None:
        """Clear an alarm; a chattering one is held raised instead (see :class:`Chatter`)."""
        old = self.active.get(key)
        if old is None:
            return None
        if key not in self._held and self._chattering(key):
            self._held[key] = by
            return None
        self._held.pop(key, None)
        return self._record(dataclasses.replace(old, kind="cleared", values={}, by=by))

    def tick(self) -> None:
        """Clear the held alarms that have been quiet for ``Chatter.quiet_s``."""
        if not self._held:
            return
        now = self._clock()
        for key, by in list(self._held.items()):
            raises = self._raises.get(key)
            if not raises or now - raises[-1] >= self.chatter.quiet_s:
                del self._held[key]
                old = self.active[key]
                self._record(dataclasses.replace(old, kind="cleared", values={}, by=by))

    def held(self, key: str) -> bool:
        """Whether ``key`` is held raised because it chatters."""
        return key in self._held

    def _count_raise(self, key: str) -> int:
        now = self._clock()
        raises = self._raises.setdefault(key, deque())
        raises.append(now)
        while raises and now - raises[0] > self.chatter.window_s:
            raises.popleft()
        return len(raises)

    def _chattering(self, key: str) -> bool:
        raises = self._raises.get(key, ())
        now = self._clock()
        return sum(now - t <= self.chatter.window_s for t in raises) > self.chatter.max_raises

    def _record(self, event: AlarmEvent) -> AlarmEvent:
        self._seq += 1
        event = dataclasses.replace(event, seq=self._seq, at=time.time())
        if self.journal is not None:
            line = event.to_json() + "\n"
            if self._writer is not None:
                self._written = self._writer.submit(_append_behind, self.journal, line)
            else:
                _append(self.journal, line)
        self._apply(event)
        for listener in self.listeners:
            listener(event)
        return event

    def _apply(self, event: AlarmEvent) -> None:
        if event.kind == "cleared":
            self.active.pop(event.key, None)
        else:
            self.active[event.key] = event
        self.recent = [*self.recent[-199:], event]

    def flush(self) -> None:
        """Wait until every event so far is in the journal (blocking: at a stop, in tests)."""
        if self._written is not None:
            self._written.result()

    def close(self) -> None:
        """Flush the journal and stop its writer thread."""
        self.flush()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None

    def by_severity(self) -> list[AlarmEvent]:
        """Active alarms a person should see, most severe first (suppressed ones are under
        their parents, not here)."""
        shown = [e for e in self.active.values() if e.suppressed_by is None]
        return sorted(shown, key=lambda e: (e.severity.rank, e.at))


def _append(journal: Path, line: str) -> None:
    with journal.open("a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _append_behind(journal: Path, line: str) -> None:
    try:
        _append(journal, line)
    except OSError as exc:  # a full or failing disk: say so; the alarm itself stands
        logging.getLogger(__name__).error("alarm journal %s not written: %s", journal, exc)


def read_journal(path: Path) -> Iterator[AlarmEvent]:
    """Every event of a journal; a torn last line (power cut mid-write) is skipped."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                return
            yield AlarmEvent.from_json(line)

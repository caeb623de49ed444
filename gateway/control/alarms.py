"""Alarms: raised and cleared events with severity, kept by the gateway for the uplink.

Every event is appended to a JSON-lines journal (fsync'd, so a power cut loses nothing that
was reported as raised), and the set of active alarms is rebuilt from it on start: an alarm
that was active when the gateway stopped is still active when it comes back.
``gateway alarms`` reads the same journal.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from gateway.control.rules import Severity
from gateway.devices.codec import Value

EventKind = Literal["raised", "cleared"]
SCHEMA_VERSION = 1


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

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> AlarmEvent:
        data = json.loads(line)
        data["severity"] = Severity(data["severity"])
        return cls(**data)


class AlarmLog:
    """Active alarms and the journal of every change. ``listeners`` (the uplink) get every
    new event once the journal has it."""

    def __init__(self, journal: Path | None = None) -> None:
        self.journal = journal
        self.listeners: list[Callable[[AlarmEvent], None]] = []
        self.active: dict[str, AlarmEvent] = {}
        self.recent: list[AlarmEvent] = []
        self._seq = 0
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
    ) -> AlarmEvent | None:
        """Raise an alarm; None if it is already active (raised once, not every cycle)."""
        if key in self.active:
            return None
        return self._record("raised", key, severity, interlock, message, device, values, None)

    def clear(self, key: str, *, by: str | None = None) -> AlarmEvent | None:
        old = self.active.get(key)
        if old is None:
            return None
        return self._record(
            "cleared", key, old.severity, old.interlock, old.message, old.device, None, by
        )

    def _record(
        self,
        kind: EventKind,
        key: str,
        severity: Severity,
        interlock: str,
        message: str,
        device: str | None,
        values: dict[str, Value] | None,
        by: str | None,
    ) -> AlarmEvent:
        self._seq += 1
        event = AlarmEvent(
            self._seq, kind, key, severity, interlock, device, message, values or {}, by=by
        )
        if self.journal is not None:
            with self.journal.open("a", encoding="utf-8") as f:
                f.write(event.to_json() + "\n")
                f.flush()
                os.fsync(f.fileno())
        self._apply(event)
        for listener in self.listeners:
            listener(event)
        return event

    def _apply(self, event: AlarmEvent) -> None:
        if event.kind == "raised":
            self.active[event.key] = event
        else:
            self.active.pop(event.key, None)
        self.recent = [*self.recent[-199:], event]

    def by_severity(self) -> list[AlarmEvent]:
        return sorted(self.active.values(), key=lambda e: (e.severity.rank, e.at))


def read_journal(path: Path) -> Iterator[AlarmEvent]:
    """Every event of a journal; a torn last line (power cut mid-write) is skipped."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                return
            yield AlarmEvent.from_json(line)

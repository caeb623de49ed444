"""The uplink's State and event payloads, built from the gateway's own objects (the contract
they follow is :mod:`gateway.wire`; telemetry batches come from :mod:`gateway.uplink.reporting`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from gateway import wire
from gateway.control.alarms import AlarmEvent

Status = Literal["online", "offline"]


@dataclass(frozen=True)
class StateMessage:
    """The retained State of one gateway process: its version, start and devices."""

    version: str
    started_at: float  # monotonic
    devices: Mapping[str, str] = field(default_factory=dict)  # device name → profile model

    def payload(self, status: Status) -> bytes:
        """Online carries the time it was said; offline does not (the last will is written
        at connect time, long before the broker publishes it)."""
        now = time.time()
        started = now - (time.monotonic() - self.started_at)
        at = now if status == "online" else None
        return wire.encode(
            wire.State(
                status=status,
                version=self.version,
                started_at=started,
                at=at,
                devices=dict(self.devices),
            )
        )


def to_event(event: AlarmEvent) -> wire.Event:
    return wire.Event(
        id=event.seq,
        kind=event.kind,
        key=event.key,
        severity=event.severity.value,
        interlock=event.interlock,
        device=event.device,
        message=event.message,
        values=dict(event.values),
        at=event.at,
        by=event.by,
        suppressed_by=event.suppressed_by,
        count=event.count,
    )


def event_batch(seq: int, event: AlarmEvent) -> bytes:
    """One alarm event as an event batch of its own, numbered ``seq``."""
    return wire.encode(wire.EventBatch(seq=seq, at=time.time(), events=[to_event(event)]))

"""What ingest remembers between transactions, so that a message costs few statements.

Only what another fleet worker cannot make wrong behind this one's back: the ids of
gateways (checked by the lock that every transaction takes on them:
:func:`fleet.ingest.locks.lock_gateways` reports one that is gone) and devices (created by
ingest, never renamed; a device deleted since makes the transaction fail and it is tried
again with nothing remembered), and each gateway's points for the points limit (read again
whenever a point not remembered comes). Sequence numbers are read in each transaction, under
the gateway's lock (:mod:`fleet.ingest.sequences`). All of it is forgotten after any
transaction that failed: what it read or wrote was rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Known:
    """Ids ingest has read or written (see the module's docstring)."""

    gateways: dict[tuple[str, str], int] = field(default_factory=dict)
    devices: dict[tuple[int, str], int] = field(default_factory=dict)
    #: gateway id -> its points, (device id, point), once read for the points limit
    points: dict[int, set[tuple[int, str]]] = field(default_factory=dict)

    def forget(self) -> None:
        self.gateways.clear()
        self.devices.clear()
        self.points.clear()

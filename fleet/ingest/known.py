"""What ingest remembers between messages, so that a message costs few statements."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Known:
    """Ids and highest sequence numbers ingest has read or written. Correct while this
    process is the only writer of batches (ingest handles one message at a time) and
    forgotten after any message that failed: its transaction was rolled back, and a gateway
    or device may have been deleted."""

    gateways: dict[tuple[str, str], int] = field(default_factory=dict)
    devices: dict[tuple[int, str], int] = field(default_factory=dict)
    #: (gateway id, kind) -> the current epoch
    epochs: dict[tuple[int, str], int] = field(default_factory=dict)
    #: (gateway id, kind, epoch) -> the highest sequence number stored in it
    highest: dict[tuple[int, str, int], int] = field(default_factory=dict)
    #: gateway id -> its points, (device id, point), once read for the points limit
    points: dict[int, set[tuple[int, str]]] = field(default_factory=dict)

    def forget(self) -> None:
        self.gateways.clear()
        self.devices.clear()
        self.epochs.clear()
        self.highest.clear()
        self.points.clear()

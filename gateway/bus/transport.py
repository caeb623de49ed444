"""The bus transport interface: send one request PDU to a unit, get its response PDU.

Implementations (:mod:`.rtu`, :mod:`.tcp`) own the port or connection, the framing and the
line timing; they translate every lower-level error into the :mod:`gateway.errors` tree.
A transport carries one transaction at a time; the bus scheduler decides which.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self


class Transport(Protocol):
    """One physical bus (a serial line or a TCP endpoint)."""

    name: str

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def transact(self, unit_id: int, pdu: bytes, response_timeout: float) -> bytes:
        """Send ``pdu`` (function code + data) to ``unit_id`` and return the response PDU.

        ``response_timeout`` counts from the end of the request on the wire. Raises
        :class:`~gateway.errors.BusTimeout`, :class:`~gateway.errors.FrameError` or
        :class:`~gateway.errors.TransportClosed`.
        """
        ...

    def wire_time(self, request_bytes: int, response_bytes: int) -> float:
        """Seconds of line time one transaction of these PDU sizes occupies (0 if unknown)."""
        ...


class LineTiming:
    """Character time and the inter-frame gap t3.5 of an RTU line (Modbus over serial line
    spec §2.5.1.1: fixed 1.75 ms above 19200 baud)."""

    def __init__(self, baudrate: int, bits_per_char: int = 11) -> None:
        self.baudrate = baudrate
        self.char_time = bits_per_char / baudrate
        self.t35 = 0.00175 if baudrate > 19200 else 3.5 * self.char_time

    def frame_time(self, nbytes: int) -> float:
        return nbytes * self.char_time


class LineClock:
    """When the next request may start on an RTU line, from what was seen on it.

    The rule is the spec's: a frame starts no earlier than t3.5 after the last byte on the
    line, whichever side sent it and whether or not anyone still waits for it — a late
    answer the master gave up on, the tail of a frame whose length was misread, the answer to
    a request that was cancelled. Two things can keep the line busy past that:

    * a frame that has started but not ended (its length is not yet reached, or cannot be
      known): adapters deliver a frame in chunks with silences up to ``settle_s`` between
      them, so the line is free only after that much silence;
    * an answer still owed to an abandoned request: it may begin at any time until the
      deadline that request had.

    Pure bookkeeping on times the caller passes in (``time.monotonic()``), so it can be
    tested without a line.
    """

    def __init__(self, timing: LineTiming, settle_s: float) -> None:
        self.timing = timing
        self.settle_s = settle_s
        self.last_byte_at = float("-inf")
        self.frame_open = False
        self.owed_until = float("-inf")

    def sent(self, at: float, nbytes: int) -> None:
        """A frame of ``nbytes`` was handed to the line at ``at``."""
        self.last_byte_at = max(self.last_byte_at, at + self.timing.frame_time(nbytes))
        self.frame_open = False

    def received(self, at: float, *, frame_open: bool) -> None:
        """Bytes arrived at ``at``; ``frame_open`` if the frame they belong to is not over.
        A frame that is over ends whatever answer was owed."""
        self.last_byte_at = max(self.last_byte_at, at)
        self.frame_open = frame_open
        if not frame_open:
            self.owed_until = float("-inf")

    def abandoned(self, deadline: float) -> None:
        """A request was sent and its answer no longer awaited; it may come until ``deadline``."""
        self.owed_until = max(self.owed_until, deadline)

    def earliest_start(self) -> float:
        """The earliest time the next request may start."""
        start = self.last_byte_at + self.timing.t35
        if self.frame_open:
            start = max(start, self.last_byte_at + self.settle_s)
        return max(start, self.owed_until)

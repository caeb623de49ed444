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

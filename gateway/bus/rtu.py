"""Modbus RTU over a serial line, keeping the line's timing itself.

pymodbus sends its next request 0.2–0.5 ms after a response, where the line needs t3.5
(4.0 ms at 9600 baud); a strict device takes that as line noise and stays silent. This
transport waits t3.5 after the last byte on the line before each request, finds the end of a
response by its length (not by silence, which USB adapters break by delivering in chunks),
checks the CRC, and never closes the shared port because one unit is silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import os
import time
from types import TracebackType
from typing import Self

import serial
from pymodbus.framer import FramerRTU

from gateway.bus.pdu import response_frame_size
from gateway.bus.transport import LineTiming
from gateway.errors import BusTimeout, FrameError, ResponseError, TransportClosed

#: Final stretch of a t3.5 wait done by spinning: asyncio sleeps round up to whole ms.
_SPIN_S = 0.0006
#: Longest silence tolerated inside a response that has started arriving.
_CHUNK_GAP_S = 0.1
_PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}


def rtu_frame(unit_id: int, pdu: bytes) -> bytes:
    """Unit id + PDU + CRC-16 (low byte first on the wire)."""
    body = bytes([unit_id]) + pdu
    return body + FramerRTU.compute_CRC(body).to_bytes(2, "big")


def crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and FramerRTU.check_CRC(frame[:-2], int.from_bytes(frame[-2:], "big"))


def _open_error(port: str, exc: BaseException) -> str:
    """A message a technician can act on."""
    err = getattr(exc, "errno", None)
    if err == errno.ENOENT or "No such file" in str(exc):
        return f"serial port {port} does not exist (is the USB adapter plugged in?)"
    if err == errno.EACCES or "Permission denied" in str(exc):
        return (
            f"permission denied on {port}: add this user to the 'dialout' group "
            "(sudo usermod -aG dialout $USER, then log in again)"
        )
    if err == errno.EBUSY or "busy" in str(exc).lower() or "lock" in str(exc).lower():
        return f"serial port {port} is busy (another program has it open)"
    return f"cannot open serial port {port}: {exc}"


class RtuTransport:
    """One RS-485 line (or USB serial port) shared by many units."""

    def __init__(
        self,
        name: str,
        port: str,
        baudrate: int = 9600,
        *,
        parity: str = "N",
        stopbits: int = 1,
        bytesize: int = 8,
    ) -> None:
        self.name = name
        self.port = port
        # t3.5 is defined on the spec's 11-bit character even for 8N1 lines; timing on the
        # actual 10 bits would send 9 % early to a strict device.
        self.timing = LineTiming(baudrate)
        self._settings = {
            "baudrate": baudrate,
            "parity": _PARITY[parity],
            "stopbits": stopbits,
            "bytesize": bytesize,
        }
        self._serial: serial.Serial | None = None
        self._rx = bytearray()
        self._last_rx = 0.0
        self._busy_until = 0.0  # end of the last frame on the line (monotonic)
        self._waiter: asyncio.Future[None] | None = None
        self._expect: int | None = None
        self._lock = asyncio.Lock()
        self.stray_bytes = 0
        self.t35_waits = 0

    async def __aenter__(self) -> Self:
        try:
            self._serial = serial.Serial(self.port, timeout=0, exclusive=True, **self._settings)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise TransportClosed(self.name, 0, _open_error(self.port, exc)) from None
        asyncio.get_running_loop().add_reader(self._serial.fileno(), self._on_readable)
        self._busy_until = time.monotonic()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._serial is not None:
            asyncio.get_running_loop().remove_reader(self._serial.fileno())
            self._serial.close()
            self._serial = None

    def wire_time(self, request_bytes: int, response_bytes: int) -> float:
        # +3 bytes each for unit id and CRC around the PDU, plus the two t3.5 gaps
        frames = (request_bytes + 3) + (response_bytes + 3)
        return self.timing.frame_time(frames) + 2 * self.timing.t35

    async def transact(self, unit_id: int, pdu: bytes, response_timeout: float) -> bytes:
        async with self._lock:
            if self._serial is None:
                raise TransportClosed(self.name, unit_id, f"port {self.port} is not open")
            await self._quiet_line()
            self._discard_stray()
            frame = rtu_frame(unit_id, pdu)
            try:
                os.write(self._serial.fileno(), frame)
            except OSError as exc:
                raise TransportClosed(self.name, unit_id, f"write to {self.port}: {exc}") from None
            tx_end = time.monotonic() + self.timing.frame_time(len(frame))
            self._busy_until = tx_end
            return await self._receive(unit_id, tx_end + response_timeout)

    async def _quiet_line(self) -> None:
        """Wait until the line has been silent for t3.5 after the last frame."""
        target = max(self._busy_until, self._last_rx) + self.timing.t35
        remaining = target - time.monotonic()
        if remaining <= 0:
            return
        self.t35_waits += 1
        if remaining > _SPIN_S:
            # whole milliseconds: the selector rounds a timeout *up* to the next ms, which
            # would end the sleep after the target instead of before the spin
            await asyncio.sleep(math.floor((remaining - _SPIN_S) * 1000) / 1000)
        while time.monotonic() < target:
            pass

    def _discard_stray(self) -> None:
        """Bytes that arrived outside a transaction (a late answer, noise) are dropped."""
        if self._rx:
            self.stray_bytes += len(self._rx)
            self._rx.clear()

    async def _receive(self, unit_id: int, deadline: float) -> bytes:
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._expect = None
        try:
            while not self._waiter.done():
                # The deadline is for the first byte; once a response is arriving it may come
                # in chunks (USB adapters, slow bridges) and is waited for while it progresses.
                if self._rx:
                    deadline = max(deadline, self._last_rx + _CHUNK_GAP_S)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    got = len(self._rx)
                    self._discard_stray()
                    detail = f"after {got} byte(s) of a response" if got else "no response"
                    raise BusTimeout(self.name, unit_id, f"timeout, {detail}")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await asyncio.shield(self._waiter)
        finally:
            self._waiter = None
        size = self._expect or len(self._rx)
        frame = bytes(self._rx[:size])
        del self._rx[:size]
        self._busy_until = self._last_rx
        return self._check(unit_id, frame)

    def _check(self, unit_id: int, frame: bytes) -> bytes:
        if not crc_ok(frame):
            raise FrameError(self.name, unit_id, f"CRC error in {len(frame)}-byte response")
        if frame[0] != unit_id:
            raise FrameError(self.name, unit_id, f"response from unit {frame[0]}")
        return frame[1:-2]

    def _on_readable(self) -> None:
        assert self._serial is not None
        try:
            data = os.read(self._serial.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError:
            # The client side of a pty or a USB adapter that went away: keep the port; the
            # next transaction times out and the breakers decide.
            return
        if not data:
            return
        self._last_rx = time.monotonic()
        self._rx += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            self._expect = response_frame_size(bytes(self._rx[:8]))
        except ResponseError:
            self._expect = len(self._rx)  # garbage: hand it over, the CRC check names it
        if self._expect is not None and len(self._rx) >= self._expect:
            waiter.set_result(None)

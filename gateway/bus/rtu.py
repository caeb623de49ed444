"""Modbus RTU over a serial line, keeping the line's timing itself.

pymodbus sends its next request 0.2–0.5 ms after a response, where the line needs t3.5
(4.0 ms at 9600 baud); a strict device takes that as line noise and stays silent. This
transport starts each request no earlier than t3.5 after the last byte seen on the line in
either direction (:class:`~gateway.bus.transport.LineClock`) — also after a timeout, a
corrupt or misdelimited frame, or a cancelled request, and counting the bytes of an answer
that comes after it gave up. It finds the end of a response by the length the request asked
for (not by silence, which USB adapters break by delivering in chunks), checks the CRC, and
never closes the shared port because one unit is silent.

Waiting costs little CPU: the gap is kept by a timerfd (:mod:`gateway.bus.timer`) instead
of a spin, and the port is not in the loop's watch while an answer is on the wire (a
terminal wakes its reader for every chunk a USB adapter hands over, even below VMIN): the
timer collects the answer when a prompt one is complete on the wire. Only a device that is
slower than that is watched, with VMIN holding its answer back until as many bytes are in
as the frame still needs. Between transactions nothing is watched either: whatever came
meanwhile is read, and counted on the line's clock, right before the next request.
"""

from __future__ import annotations

import asyncio
import errno
import os
import termios
import time
from types import TracebackType
from typing import Any, Self

import serial

from gateway.bus.crc import crc16
from gateway.bus.pdu import response_frame_size
from gateway.bus.timer import PreciseTimer
from gateway.bus.transport import LineClock, LineTiming
from gateway.errors import BusTimeout, FrameError, ResponseError, TransportClosed

#: Longest silence inside a frame (USB adapters deliver in chunks 1–16 ms apart): a response
#: that has started is waited for while it progresses, and a frame whose end cannot be told
#: from its length is over after this much silence.
_SETTLE_S = 0.1
#: The shortest response frame (an exception: unit, function, code, CRC).
_MIN_RESPONSE = 5
#: Reads of a terminal within one wake-up while a frame misses bytes.
_READS_PER_WAKE = 3
_READS = {1, 2, 3, 4}
_WRITES = {5, 6, 15, 16}
_MEI = 0x2B  # encapsulated interface transport (FC43/14 device identification)
_PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}


def rtu_frame(unit_id: int, pdu: bytes) -> bytes:
    """Unit id + PDU + CRC-16 (low byte first on the wire)."""
    body = bytes([unit_id]) + pdu
    return body + crc16(body).to_bytes(2, "big")


def crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "big")


class Misframed(Exception):
    """The first bytes of a response do not answer the request, so its length is unknown."""


def answer_size(request: bytes, head: bytes | bytearray) -> int | None:
    """Size of the RTU frame answering ``request`` (unit id + PDU) from the first bytes that
    arrived; None while too few have to tell. Raises :class:`Misframed` when they cannot be
    its answer (another unit, another function, another byte count)."""
    if not head:
        return None
    if head[0] != request[0]:
        raise Misframed(f"response from unit {head[0]}")
    if len(head) < 2:
        return None
    function = request[1]
    if head[1] == function | 0x80:
        return _MIN_RESPONSE
    if head[1] != function:
        raise Misframed(f"response function {head[1]:#04x} does not answer {function:#04x}")
    if function in _WRITES:
        return 8  # unit, function, address, value or count, CRC
    if function not in _READS or len(request) < 6:
        try:
            # FC43 device identification: its size follows from the objects, all of them
            return response_frame_size(bytes(head if function == _MEI else head[:8]))
        except ResponseError as exc:
            raise Misframed(str(exc)) from None
    if len(head) < 3:
        return None
    count = int.from_bytes(request[4:6], "big")
    expected = (count + 7) // 8 if function in (1, 2) else 2 * count
    if head[2] != expected:
        raise Misframed(f"byte count {head[2]}, expected {expected}")
    return 5 + expected


def expected_size(request: bytes) -> int | None:
    """Size of the normal (not exception) answer to ``request`` (unit id + PDU), when the
    request alone tells it (reads and writes); None otherwise."""
    function = request[1] if len(request) > 1 else 0
    if function in _WRITES:
        return 8
    if function in _READS and len(request) >= 6:
        count = int.from_bytes(request[4:6], "big")
        return 5 + ((count + 7) // 8 if function in (1, 2) else 2 * count)
    return None


def stray_size(head: bytes | bytearray) -> int | None:
    """Size of a response frame from its first bytes, whatever it answers (a late or owed
    answer, a function the request does not tell the size of); None while too few have
    arrived; raises :class:`Misframed` when it cannot be delimited."""
    try:
        return response_frame_size(bytes(head[:8])) if len(head) >= 3 else None
    except ResponseError as exc:
        raise Misframed(str(exc)) from None
    except Exception as exc:  # pymodbus's size lookup, on bytes that are no frame it knows
        raise Misframed(f"undelimitable response ({exc!r})") from None


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


class _Pending:
    """A transaction: its request, once sent its deadline, and the answer it waits for."""

    def __init__(self, unit_id: int, frame: bytes, response_timeout: float) -> None:
        self.unit_id = unit_id
        self.frame = frame
        self.request = frame[:-2]  # unit id + PDU
        self.response_timeout = response_timeout
        self.sent = False
        self.deadline = 0.0
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.deadline_handle: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> bool:
        return self.sent and not self.answer.done()

    @property
    def answered(self) -> bool:
        return self.answer.done() and not self.answer.cancelled()


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
        self.clock = LineClock(self.timing, _SETTLE_S)
        self._settings = {
            "baudrate": baudrate,
            "parity": _PARITY[parity],
            "stopbits": stopbits,
            "bytesize": bytesize,
        }
        self._serial: serial.Serial | None = None
        self._fd = -1
        self._timer = PreciseTimer()
        self._rx = bytearray()
        self._last_rx = 0.0
        self._pending: _Pending | None = None
        self._vmin = 1
        self._attrs: list[Any] | None = None  # the port's termios attributes, once read
        self._watching = False
        self._lock = asyncio.Lock()
        self.stray_bytes = 0
        self.t35_waits = 0

    async def __aenter__(self) -> Self:
        try:
            self._serial = serial.Serial(self.port, timeout=0, exclusive=True, **self._settings)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise TransportClosed(self.name, 0, _open_error(self.port, exc)) from None
        self._fd = self._serial.fileno()
        self._timer.__enter__()
        # A port may be opened in the middle of someone else's frame.
        self.clock.received(time.monotonic(), frame_open=False)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._serial is not None:
            self._unwatch()
            self._timer.__exit__(exc_type, exc, tb)
            self._serial.close()
            self._serial = None
            self._fd = -1

    def wire_time(self, request_bytes: int, response_bytes: int) -> float:
        # +3 bytes each for unit id and CRC around the PDU, plus the two t3.5 gaps
        frames = (request_bytes + 3) + (response_bytes + 3)
        return self.timing.frame_time(frames) + 2 * self.timing.t35

    async def transact(self, unit_id: int, pdu: bytes, response_timeout: float) -> bytes:
        async with self._lock:
            if self._serial is None:
                raise TransportClosed(self.name, unit_id, f"port {self.port} is not open")
            pending = self._pending = _Pending(unit_id, rtu_frame(unit_id, pdu), response_timeout)
            try:
                self._send_when_free()
                return self._check(unit_id, await pending.answer)
            except asyncio.CancelledError:
                if pending.sent and not pending.answered:
                    self.clock.abandoned(pending.deadline)  # its answer may still come
                raise
            finally:
                self._timer.cancel()  # its send, or the collection of its answer
                if pending.deadline_handle is not None:
                    pending.deadline_handle.cancel()
                self._pending = None
                if pending.sent and not pending.answered:
                    self._watch()  # the answer it may still get keeps the line busy until over
                else:
                    self._unwatch()
                if not self._rx:
                    # Idle, the line wakes the loop from the shortest answer on: what is less
                    # (noise, a cut-off tail) is read by the next request's last look.
                    self._set_vmin(_MIN_RESPONSE)

    # -- the request ------------------------------------------------------------------------

    def _send_when_free(self) -> None:
        """Send the pending request as soon as :attr:`clock` lets it start.

        Run again by the timer until then: bytes that arrive meanwhile move that time. The
        write happens in the timer's own callback, so nothing runs between the instant and
        the first byte. Whatever was received before is nobody's answer and is dropped.
        """
        pending = self._pending
        if pending is None or pending.sent:
            return
        start = self.clock.earliest_start()
        if start <= time.monotonic():
            self._on_readable()  # one last look: bytes the loop has not handed over yet
            start = self.clock.earliest_start()
        if start > time.monotonic():
            self.t35_waits += 1
            self._timer.call_at(start, self._send_when_due)
            return
        if self._rx:
            self.stray_bytes += len(self._rx)
            self._rx.clear()
        self._set_vmin(_MIN_RESPONSE)
        try:
            os.write(self._fd, pending.frame)
        except OSError as exc:
            message = f"write to {self.port}: {exc}"
            pending.answer.set_exception(TransportClosed(self.name, pending.unit_id, message))
            return
        sent_at = time.monotonic()
        self.clock.sent(sent_at, len(pending.frame))
        pending.sent = True
        request_end = sent_at + self.timing.frame_time(len(pending.frame))
        pending.deadline = request_end + pending.response_timeout
        # Nothing wakes the loop while the answer is on the wire (a terminal wakes its
        # reader for every chunk an adapter hands over, even below VMIN): the timer collects
        # it when a prompt answer is complete, the shortest (exception) one included. Only
        # an answer not complete by then is watched for, up to its deadline.
        expected = expected_size(pending.request) or _MIN_RESPONSE
        self._unwatch()
        self._timer.call_at(
            request_end + self.timing.t35 + self.timing.frame_time(expected), self._collect
        )

    def _collect(self) -> None:
        """(timer) Take what has come of the answer by the time a prompt one is complete; a
        device that thinks before it answers wakes the loop through the reader from here,
        once as much has come as the frame needs (VMIN)."""
        self._on_readable()
        pending = self._pending
        if pending is not None and pending.waiting:
            self._watch()
            loop = asyncio.get_running_loop()
            pending.deadline_handle = loop.call_at(pending.deadline, self._on_deadline, pending)

    def _send_when_due(self) -> None:
        """The timer's callback: nothing may be left to raise into the loop, or the
        transaction would wait for ever."""
        try:
            self._send_when_free()
        except Exception as exc:
            pending = self._pending
            if pending is not None and not pending.answer.done():
                pending.answer.set_exception(exc)

    # -- the answer -------------------------------------------------------------------------

    def _on_deadline(self, pending: _Pending) -> None:
        """No answer by the deadline for its first byte, or one that stopped coming."""
        if pending.answer.done():
            return
        self._on_readable()  # bytes held back by VMIN count as progress
        if pending.answer.done():
            return
        if self._rx and self._last_rx + _SETTLE_S > time.monotonic():
            loop = asyncio.get_running_loop()
            pending.deadline_handle = loop.call_at(
                self._last_rx + _SETTLE_S, self._on_deadline, pending
            )
            return
        got = len(self._rx)
        detail = f"after {got} byte(s) of a response" if got else "no response"
        self.clock.received(self._last_rx, frame_open=bool(self._rx))
        pending.answer.set_exception(BusTimeout(self.name, pending.unit_id, f"timeout, {detail}"))

    def _check(self, unit_id: int, frame: bytes) -> bytes:
        if not crc_ok(frame):
            raise FrameError(self.name, unit_id, f"CRC error in {len(frame)}-byte response")
        return frame[1:-2]

    # -- bytes from the line ----------------------------------------------------------------

    def _on_readable(self) -> None:
        # A terminal may hand over what it holds in pieces (a pty: 64 bytes, then the rest):
        # while a frame still misses bytes, read again now rather than on the next wake-up.
        for _ in range(_READS_PER_WAKE):
            try:
                data = os.read(self._fd, 4096)
            except BlockingIOError:
                return
            except OSError:
                # The client side of a pty or a USB adapter that went away: keep the port;
                # the next transaction times out and the breakers decide.
                return
            if not data:
                return
            self._last_rx = time.monotonic()
            self._rx += data
            if not self._account(self._last_rx):
                return

    def _account(self, now: float) -> bool:
        """Tell the clock where the bytes received so far leave the line, and hand a
        complete answer (or the news that it cannot be one) to the pending transaction;
        True while a frame waits for more bytes."""
        pending = self._pending if self._pending is not None and self._pending.waiting else None
        try:
            if pending is not None:
                size = answer_size(pending.request, self._rx)
            else:
                size = stray_size(self._rx)
        except Misframed as exc:
            self.clock.received(now, frame_open=True)  # over only after silence
            if pending is not None:
                pending.answer.set_exception(FrameError(self.name, pending.unit_id, str(exc)))
            self._set_vmin(1)
            return False
        if size is None or len(self._rx) < size:
            # The rest is on the wire: the kernel holds it back until all of it is in, rather
            # than wake this thread for every chunk the adapter hands over.
            missing = (size or _MIN_RESPONSE) - len(self._rx)
            self.clock.received(now, frame_open=True)
            self._set_vmin(missing)
            return True
        frame = bytes(self._rx[:size])
        del self._rx[:size]
        self.clock.received(now, frame_open=bool(self._rx))
        self._set_vmin(1 if self._rx else _MIN_RESPONSE)
        if pending is not None:
            self._unwatch()
            pending.answer.set_result(frame)
        else:
            self.stray_bytes += len(frame)  # a late answer: over, and nobody's
        return False

    def _watch(self) -> None:
        if not self._watching and self._fd >= 0:
            asyncio.get_running_loop().add_reader(self._fd, self._on_readable)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            asyncio.get_running_loop().remove_reader(self._fd)
            self._watching = False

    def _set_vmin(self, vmin: int) -> None:
        """Readable only once ``vmin`` bytes are in (VTIME stays 0, so poll honours VMIN)."""
        vmin = min(vmin, 255)
        if vmin == self._vmin or self._fd < 0:
            return
        try:
            if self._attrs is None:  # read once: nothing else changes the port's settings
                self._attrs = termios.tcgetattr(self._fd)
                self._attrs[6][termios.VTIME] = 0
            self._attrs[6][termios.VMIN] = vmin
            termios.tcsetattr(self._fd, termios.TCSANOW, self._attrs)
        except termios.error:
            return  # not a terminal: every byte wakes the loop, which is only slower
        self._vmin = vmin

"""An RS-485 line with several simulated units, served on a pseudo-terminal.

A pty has no baud rate, so the line model supplies the timing a real line has:

* a request occupies the wire for its length in character times from its first byte;
* a unit starts answering t3.5 after the end of the request (that is how a real slave
  finds the end of a frame), plus its think time;
* each response byte is delivered when its last bit has arrived, in chunks as USB adapters
  deliver them (16 bytes, or the chunk fault's size and gaps);
* a request that starts less than t3.5 after the previous frame on the wire is line noise:
  every unit ignores it (and it is counted), as a strict device does;
* unknown unit ids and requests with a bad CRC get silence, as on a real bus.

The server runs in a thread of its own, because asyncio rounds its sleeps to whole
milliseconds and t3.5 at 115200 baud is 1.75 ms. All times are ``time.monotonic()``, the
same clock the gateway uses, so frame logs from both sides line up.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU

from gateway.bus.transport import LineTiming
from hil_tests.rig.fault_injection import Faults
from hil_tests.rig.modbus_slave import respond
from hil_tests.rig.nullmodem import NullModem
from hil_tests.rig.registers import SimulatedUnit

USB_CHUNK = 16
#: SCHED_RR priority of a line's thread: above the gateway's control path (20), well below
#: the kernel's own threads (50 and up)
LINE_RT_PRIORITY = 30
_SPIN_S = 0.0002
_REQUEST_DECODER = DecodePDU(is_server=True)


def _hardware_priority() -> None:
    """The line stands for hardware, which a busy machine never slows: its thread asks for a
    real-time priority above the gateway's control path (best effort: without the right it
    stays where it is, and load on the machine slows the simulated line too)."""
    with contextlib.suppress(OSError):
        os.sched_setscheduler(
            threading.get_native_id(), os.SCHED_RR, os.sched_param(LINE_RT_PRIORITY)
        )


@dataclass(frozen=True, slots=True)
class FrameTiming:
    """One answered request on the wire (monotonic seconds)."""

    unit_id: int
    function: int
    request_start: float
    request_end: float
    response_start: float
    response_end: float


@dataclass
class LineStats:
    requests_seen: int = 0
    responses_sent: int = 0
    t35_violations: int = 0
    noise_bytes: int = 0
    unknown_unit_frames: int = 0
    bad_crc_requests: int = 0
    corrupted_responses: int = 0
    broadcasts: int = 0
    log: deque[FrameTiming] = field(default_factory=lambda: deque(maxlen=100_000))


def request_size(buf: bytes) -> int | None:
    """Size of the RTU request frame at the start of ``buf``; None while too short to tell;
    0 when the function code is unknown (the frame cannot be delimited)."""
    if len(buf) < 2:
        return None
    cls = _REQUEST_DECODER.lookupPduClass(buf)
    if cls is None:
        return 0
    return cls.calculateRtuFrameSize(buf) or None


class RtuLineServer:
    """Serve ``units`` (by unit id) on one pty line at ``baudrate``."""

    def __init__(
        self,
        units: Mapping[int, SimulatedUnit],
        baudrate: int = 9600,
        *,
        faults: Faults | None = None,
        lock: threading.Lock | None = None,
        name: str = "line",
    ) -> None:
        self.units = dict(units)
        self.timing = LineTiming(baudrate)
        self.faults = faults or Faults()
        self.stats = LineStats()
        self.name = name
        self._lock = lock or threading.Lock()
        self._modem = NullModem()
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name=f"rtu-line:{name}", daemon=True)
        self._line_free_at = 0.0
        self._started = False

    @property
    def client_path(self) -> str:
        return self._modem.path

    # -- lifetime ---------------------------------------------------------------------------

    def start(self) -> None:
        self._line_free_at = time.monotonic()
        self._thread.start()
        self._started = True

    def close(self) -> None:
        if self._started:
            os.write(self._stop_w, b"x")
            self._thread.join(timeout=5)
            self._started = False
        for fd in (self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._modem.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the line ---------------------------------------------------------------------------

    def _serve(self) -> None:
        _hardware_priority()
        buf = bytearray()
        first_at = 0.0
        while True:
            timeout = self.timing.t35 if buf else None
            data, at = self._read(timeout)
            if data is None:
                return  # stop requested
            if not data:
                # t3.5 of silence inside a frame we could not complete: it was noise
                self.stats.noise_bytes += len(buf)
                buf.clear()
                continue
            if not buf:
                first_at = at
                if at - self._line_free_at < self.timing.t35:
                    self._discard_noise(data, at)
                    continue
            buf += data
            while buf:
                size = request_size(bytes(buf))
                if size is None or (size and len(buf) < size):
                    break  # wait for the rest (a client may write in pieces)
                if size == 0:
                    self.stats.noise_bytes += len(buf)
                    buf.clear()
                    break
                frame, rest = bytes(buf[:size]), bytes(buf[size:])
                buf.clear()
                self._handle(frame, first_at)
                if rest:  # a second frame right behind the first: no t3.5 between them
                    self.stats.t35_violations += 1
                    self.stats.noise_bytes += len(rest)

    def _read(self, timeout: float | None) -> tuple[bytes | None, float]:
        """Bytes from the gateway and when they arrived; b"" on timeout; None to stop."""
        ready, _, _ = select.select([self._modem.master, self._stop_r], [], [], timeout)
        at = time.monotonic()
        if self._stop_r in ready:
            return None, at
        if not ready:
            return b"", at
        try:
            return os.read(self._modem.master, 4096), at
        except (BlockingIOError, OSError):
            return b"", at

    def _discard_noise(self, data: bytes, at: float) -> None:
        """A frame began inside the t3.5 gap: drop everything until t3.5 of silence."""
        self.stats.t35_violations += 1
        self.stats.noise_bytes += len(data)
        while True:
            more, _ = self._read(self.timing.t35)
            if more is None or not more:
                break
            self.stats.noise_bytes += len(more)
        self._line_free_at = time.monotonic()

    def _handle(self, frame: bytes, first_at: float) -> None:
        request_end = first_at + self.timing.frame_time(len(frame))
        self._line_free_at = request_end
        self.stats.requests_seen += 1
        if not FramerRTU.check_CRC(frame[:-2], int.from_bytes(frame[-2:], "big")):
            self.stats.bad_crc_requests += 1
            return
        unit_id, pdu = frame[0], frame[1:-2]
        if unit_id == 0:
            self.stats.broadcasts += 1
            with self._lock:
                for each in self.units.values():
                    respond(each, pdu)
            return
        unit = self.units.get(unit_id)
        faults = self.faults.of(unit_id)
        if unit is None:
            self.stats.unknown_unit_frames += 1
            return
        if faults.dead:
            return
        with self._lock:
            answer = respond(unit, pdu)
        response = bytes([unit_id]) + answer
        crc = FramerRTU.compute_CRC(response)
        if self.faults.take_crc_corruption(unit_id):
            crc ^= 0xA5A5
            self.stats.corrupted_responses += 1
        response += crc.to_bytes(2, "big")
        start = request_end + self.timing.t35 + faults.think_time_s
        end = self._transmit(response, start, faults.chunk_size, faults.chunk_gap_s)
        self.stats.responses_sent += 1
        self.stats.log.append(FrameTiming(unit_id, pdu[0], first_at, request_end, start, end))

    def _transmit(self, frame: bytes, start: float, chunk: int | None, gap: float) -> float:
        """Deliver ``frame`` byte-paced from ``start``; return when its last byte went out."""
        size = chunk or USB_CHUNK
        sent = 0
        extra = 0.0
        due = start
        while sent < len(frame):
            piece = frame[sent : sent + size]
            due = start + extra + self.timing.frame_time(sent + len(piece))
            self._wait_until(due)
            os.write(self._modem.master, piece)
            sent += len(piece)
            if chunk:
                extra += gap
        # The wire's view: the last bit arrived at ``due``. (Stamping after the write would
        # be later than the gateway's own stamp of the same byte, by the syscall's return.)
        self._line_free_at = due
        return due

    def _wait_until(self, due: float) -> None:
        """Sleep precisely until ``due``; bytes the gateway sends meanwhile collide with
        our answer on a half-duplex line and are counted as a t3.5 violation."""
        while True:
            remaining = due - time.monotonic()
            if remaining <= 0:
                return
            if remaining > _SPIN_S:
                ready, _, _ = select.select([self._modem.master], [], [], remaining - _SPIN_S)
                if ready:
                    self._collision()
                continue
            while time.monotonic() < due:
                pass
            return

    def _collision(self) -> None:
        try:
            data = os.read(self._modem.master, 4096)
        except (BlockingIOError, OSError):
            return
        if data:
            self.stats.t35_violations += 1
            self.stats.noise_bytes += len(data)

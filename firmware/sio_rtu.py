"""Modbus RTU framing for the SIO-1 slave: bytes from the channel in, request frames out.

A request frame ends
* by its length, as soon as the function code tells it (01-06: 8 bytes; 15/16: 9 + byte
  count), so a response never waits for a silence the main loop could only see one tick
  late; or
* by ``silence_ms`` without a byte, for function codes whose length is unknown (the frame is
  then answered with exception 01 if its CRC holds) and for the remains of broken frames.

The main loop reads the channel once per tick, so it cannot see the 1.75 ms t3.5 of a fast
line; ``silence_ms`` is therefore t3.5 rounded up plus one tick. After a CRC error the rest
of the buffer is dropped up to the next silence (resynchronisation). Frames addressed to
another unit and broadcasts (unit 0) are not answered: a broadcast would let a claim or a
heartbeat land without the gateway knowing.
"""

from sio_crc import crc16, crc_ok
from sio_ticks import ticks_diff

MAX_FRAME = 256


def request_length(buf, n):
    """Length of the request frame starting ``buf[:n]``: an int, 0 while too few bytes have
    arrived to tell, or -1 when the function code does not tell (end by silence)."""
    if n < 2:
        return 0
    fc = buf[1]
    if 1 <= fc <= 6:
        return 8
    if fc == 15 or fc == 16:
        return 9 + buf[6] if n >= 7 else 0
    return -1


class RtuFramer:
    """Assembles request frames from chunks of received bytes."""

    def __init__(self, silence_ms):
        self.silence_ms = silence_ms
        self.buf = bytearray(MAX_FRAME)
        self.n = 0
        self.last_rx = 0
        self.dropping = False  # discarding bytes until the line goes silent
        self.errors = 0  # frames dropped: CRC errors, overruns, fragments

    def feed(self, data, count, now):
        """Append ``data[:count]`` received at tick ``now``."""
        if count <= 0:
            return
        self.last_rx = now
        if self.dropping:
            return
        if self.n + count > MAX_FRAME:
            self.discard()
            return
        self.buf[self.n : self.n + count] = data[:count]
        self.n += count

    def take(self, now):
        """The next complete frame (bytes, CRC not yet checked) or None."""
        silent = ticks_diff(now, self.last_rx) >= self.silence_ms
        if self.dropping:
            if silent:
                self.dropping = False
            return None
        if self.n == 0:
            return None
        need = request_length(self.buf, self.n)
        if need > 0 and self.n >= need:
            frame = bytes(self.buf[:need])
            self.buf[: self.n - need] = self.buf[need : self.n]
            self.n -= need
            return frame
        if not silent:
            return None
        frame = bytes(self.buf[: self.n])
        self.n = 0
        if need != -1:  # a fragment of a frame whose length was known
            self.errors += 1
            return None
        return frame

    def discard(self):
        """Drop everything buffered and whatever follows until the line goes silent."""
        self.n = 0
        self.dropping = True
        self.errors += 1


def request_pdu(framer, frame, unit_id):
    """The PDU of ``frame`` if it is a request for ``unit_id`` with a good CRC, else None.
    A CRC error makes the framer resynchronise."""
    if not crc_ok(frame):
        framer.discard()
        return None
    if frame[0] != unit_id:
        return None
    return frame[1:-2]


def response_frame(unit_id, pdu):
    """Unit id + ``pdu`` + CRC, low byte first."""
    out = bytearray(len(pdu) + 3)
    out[0] = unit_id
    out[1 : 1 + len(pdu)] = pdu
    crc = crc16(out, 0, len(pdu) + 1)
    out[-2] = crc & 0xFF
    out[-1] = crc >> 8
    return out

"""CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), table-driven.

The 512-byte table is built once at import: on an RP2040 the bitwise loop costs about
eight times as long per byte, and a 256-byte FC16 frame must be checked well inside one
main-loop tick. On the wire the CRC goes low byte first.
"""


def _tables():
    lo = bytearray(256)
    hi = bytearray(256)
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        lo[i] = crc & 0xFF
        hi[i] = crc >> 8
    return lo, hi


_LO, _HI = _tables()


def crc16(buf, start=0, end=-1):
    """CRC of ``buf[start:end]`` (``end`` -1 = to the end) without slicing a copy."""
    if end < 0:
        end = len(buf)
    crc = 0xFFFF
    for i in range(start, end):
        idx = (crc ^ buf[i]) & 0xFF
        crc = (crc >> 8) ^ (_HI[idx] << 8 | _LO[idx])
    return crc


def crc_ok(frame, n=-1):
    """True when the last two of the first ``n`` bytes are the CRC of the bytes before them."""
    if n < 0:
        n = len(frame)
    if n < 4:
        return False
    crc = crc16(frame, 0, n - 2)
    return frame[n - 2] == crc & 0xFF and frame[n - 1] == crc >> 8

"""The Modbus CRC two bytes a step gives what the byte-at-a-time reference gives."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU

from gateway.bus.crc import crc16
from gateway.bus.rtu import crc_ok, rtu_frame


@given(st.binary(max_size=300))
def test_the_crc_is_the_reference_crc_for_any_bytes(data: bytes) -> None:
    assert crc16(data) == FramerRTU.compute_CRC(data)


def test_a_known_frame_carries_its_crc_low_byte_first() -> None:
    # read 1 holding register at 0 from unit 1: the CRC bytes are 84 0A on the wire
    assert rtu_frame(1, bytes([3, 0, 0, 0, 1])) == bytes.fromhex("010300000001840a")


@given(st.integers(1, 247), st.binary(min_size=1, max_size=250), st.integers(0, 7))
def test_a_frame_checks_and_any_flipped_bit_is_caught(unit: int, pdu: bytes, bit: int) -> None:
    frame = rtu_frame(unit, pdu)
    assert crc_ok(frame)
    spoiled = bytearray(frame)
    spoiled[len(frame) // 2] ^= 1 << bit
    assert not crc_ok(bytes(spoiled))

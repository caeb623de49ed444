"""Codec round trips for every type, word order, scale, scale factor and sentinel."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from gateway.devices import codec
from gateway.devices.profile import Point, PointType, Table, WordOrder
from gateway.errors import CodecError

INTEGER_TYPES = [PointType.U16, PointType.I16, PointType.U32, PointType.I32, PointType.ENUM]


def make_point(ptype: PointType, **extra: object) -> Point:
    fields: dict[str, object] = {"name": "p", "table": "holding", "address": 0, "type": ptype}
    if ptype is PointType.ENUM:
        fields["enum"] = {0: "off", 1: "on"}
    if ptype is PointType.BITFIELD:
        fields.setdefault("bits", {0: "a", 15: "b"})
    if ptype is PointType.BIT:
        fields["table"] = "coil"
    fields.update(extra)
    return Point.model_validate(fields)


word_orders = st.sampled_from(list(WordOrder))


@st.composite
def point_and_raw(draw: st.DrawFn) -> tuple[Point, int]:
    ptype = draw(st.sampled_from(INTEGER_TYPES))
    point = make_point(ptype, word_order=draw(word_orders))
    assert point.raw_range is not None
    lo, hi = point.raw_range
    return point, draw(st.integers(lo, hi))


@given(point_and_raw())
def test_every_raw_integer_round_trips_through_registers(case: tuple[Point, int]) -> None:
    point, raw = case
    regs = codec.encode_raw(point, raw)
    assert len(regs) == point.width
    assert all(0 <= r <= 0xFFFF for r in regs)
    assert codec.decode_raw(point, regs) == raw


@given(st.integers(0, 0xFFFF_FFFF))
def test_word_order_swaps_the_two_registers(raw: int) -> None:
    big = codec.encode_raw(make_point(PointType.U32, word_order="big"), raw)
    little = codec.encode_raw(make_point(PointType.U32, word_order="little"), raw)
    assert big == [raw >> 16, raw & 0xFFFF]
    assert little == list(reversed(big))


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), word_orders)
def test_every_register_pair_decodes_to_a_value_that_reencodes_identically(
    hi: int, lo: int, order: WordOrder
) -> None:
    for ptype in (PointType.U32, PointType.I32):
        point = make_point(ptype, word_order=order)
        assert codec.encode(point, codec.decode(point, [hi, lo])) == [hi, lo]


@given(st.floats(width=32, allow_nan=False), word_orders)
def test_f32_round_trips_exactly(value: float, order: WordOrder) -> None:
    point = make_point(PointType.F32, word_order=order)
    assert codec.decode(point, codec.encode(point, value)) == value


def test_f32_matches_ieee_big_endian_layout() -> None:
    regs = codec.encode(make_point(PointType.F32), 16.5)
    assert struct.pack(">HH", *regs) == struct.pack(">f", 16.5)


@given(
    st.sampled_from([PointType.U16, PointType.I16, PointType.U32, PointType.I32]),
    st.sampled_from([0.1, 0.01, 0.5, 10.0, 1.0]),
    st.data(),
)
def test_scaled_values_round_trip_and_stay_within_half_a_step(
    ptype: PointType, scale: float, data: st.DataObject
) -> None:
    point = make_point(ptype, scale=scale)
    assert point.raw_range is not None
    raw = data.draw(st.integers(*point.raw_range))
    regs = codec.encode_raw(point, raw)
    value = codec.decode(point, regs)
    assert isinstance(value, float)
    assert codec.encode(point, value) == regs
    assert math.isclose(value, raw * scale, rel_tol=1e-9, abs_tol=scale / 2)


@given(st.integers(-0x8000, 0x7FFF), st.integers(-4, 4))
def test_sunspec_scale_factor_applies_a_power_of_ten(raw: int, sf: int) -> None:
    point = make_point(PointType.I16, scale_factor="w_sf")
    value = codec.decode(point, codec.encode_raw(point, raw), sf)
    assert value == pytest.approx(raw * 10.0**sf)
    assert codec.encode(point, value, sf) == codec.encode_raw(point, raw)


def test_unimplemented_scale_factor_makes_the_value_unknown() -> None:
    point = make_point(PointType.I16, scale_factor="w_sf")
    assert codec.decode(point, [123], codec.SF_NOT_IMPLEMENTED) is None
    assert codec.decode(point, [123], None) is None


@given(st.sampled_from([(PointType.U16, 0xFFFF), (PointType.I16, -0x8000), (PointType.U32, 0)]))
def test_not_implemented_sentinel_decodes_to_none_and_back(case: tuple[PointType, int]) -> None:
    ptype, na = case
    point = make_point(ptype, na=na)
    regs = codec.encode(point, None)
    assert codec.decode(point, regs) is None
    assert codec.decode_raw(point, regs) == na


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=16))
def test_strings_round_trip_nul_padded(text: str) -> None:
    point = make_point(PointType.STRING, length=8)
    regs = codec.encode(point, text)
    assert len(regs) == 8
    assert codec.decode(point, regs) == text


def test_string_too_long_names_the_point_and_the_limit() -> None:
    with pytest.raises(CodecError, match="'p': 'ABCDE' is longer than 4 characters"):
        codec.encode(make_point(PointType.STRING, length=2), "ABCDE")


@given(st.integers(0, 0xFFFF_FFFF))
def test_two_register_bitfield_keeps_every_bit(raw: int) -> None:
    point = make_point(PointType.BITFIELD, length=2, bits={0: "a", 31: "b"})
    assert codec.decode(point, codec.encode_raw(point, raw)) == raw


@given(st.integers(0, 0xFFFF_FFFF), word_orders)
def test_a_two_register_enum_keeps_its_32_bit_code(raw: int, order: WordOrder) -> None:
    """KEBA's states are 32-bit registers: the code is whole in either word order."""
    point = make_point(PointType.ENUM, length=2, word_order=order)
    regs = codec.encode_raw(point, raw)
    assert len(regs) == 2
    assert codec.decode(point, regs) == raw
    if order is WordOrder.BIG:
        assert regs == [raw >> 16, raw & 0xFFFF]


@given(st.booleans())
def test_bits_decode_to_booleans(value: bool) -> None:
    point = make_point(PointType.BIT)
    assert codec.decode(point, codec.encode(point, value)) is value


@given(st.integers())
def test_out_of_range_values_are_refused_with_the_range(value: int) -> None:
    point = make_point(PointType.U16)
    assume(not 0 <= value <= 0xFFFF)
    with pytest.raises(CodecError, match=r"outside 0\.\.65535"):
        codec.encode(point, value)


def test_wrong_register_count_is_an_error() -> None:
    with pytest.raises(CodecError, match="expected 2 register"):
        codec.decode(make_point(PointType.U32), [1])


def test_point_types_match_their_tables() -> None:
    with pytest.raises(ValueError, match="needs table coil or discrete"):
        Point(name="x", table=Table.INPUT, address=0, type=PointType.BIT)

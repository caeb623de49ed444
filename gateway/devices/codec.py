"""Encode and decode point values to and from Modbus registers.

A point's raw value is an integer (or a float for ``f32``, text for ``string``) spread over one
or two 16-bit registers in the point's word order. The engineering value applies a fixed
``scale`` or a SunSpec scale factor (value = raw × 10^SF); a raw value equal to the point's
not-implemented sentinel decodes to ``None``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from gateway.devices.profile import Point, PointType, WordOrder
from gateway.errors import CodecError

Value = int | float | bool | str | None

#: SunSpec marks an unimplemented scale factor with 0x8000.
SF_NOT_IMPLEMENTED = -0x8000


def _words_to_int(regs: Sequence[int], order: WordOrder) -> int:
    words = list(regs) if order is WordOrder.BIG else list(reversed(regs))
    out = 0
    for w in words:
        out = (out << 16) | (w & 0xFFFF)
    return out


def _int_to_words(value: int, width: int, order: WordOrder) -> list[int]:
    words = [(value >> (16 * i)) & 0xFFFF for i in reversed(range(width))]
    return words if order is WordOrder.BIG else list(reversed(words))


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


def decode_raw(point: Point, regs: Sequence[int]) -> int | float | str:
    """The raw value of a point from its registers (or a single 0/1 for bit points)."""
    if len(regs) != point.width:
        raise CodecError(
            f"point {point.name!r}: expected {point.width} register(s), got {len(regs)}"
        )
    order = point.word_order or WordOrder.BIG
    match point.type:
        case PointType.BIT:
            return 1 if regs[0] else 0
        case PointType.STRING:
            data = b"".join(r.to_bytes(2, "big") for r in regs)
            return data.split(b"\x00", 1)[0].decode("ascii", errors="replace").rstrip()
        case PointType.F32:
            return struct.unpack(">f", _words_to_int(regs, order).to_bytes(4, "big"))[0]  # type: ignore[no-any-return]
        case PointType.I16 | PointType.I32:
            return _signed(_words_to_int(regs, order), 16 * point.width)
        case _:
            return _words_to_int(regs, order)


def encode_raw(point: Point, raw: int | float | str) -> list[int]:
    """Registers (or one 0/1 for bit points) holding a raw value."""
    order = point.word_order or WordOrder.BIG
    if point.type is PointType.STRING:
        if not isinstance(raw, str):
            raise CodecError(f"point {point.name!r}: expected text, got {raw!r}")
        data = raw.encode("ascii")
        if len(data) > 2 * point.width:
            raise CodecError(
                f"point {point.name!r}: {raw!r} is longer than {2 * point.width} characters"
            )
        data = data.ljust(2 * point.width, b"\x00")
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if point.type is PointType.F32:
        bits = int.from_bytes(struct.pack(">f", float(raw)), "big")
        return _int_to_words(bits, 2, order)
    if not isinstance(raw, int) or (isinstance(raw, bool) and point.type is not PointType.BIT):
        raise CodecError(f"point {point.name!r}: expected an integer raw value, got {raw!r}")
    lo, hi = point.raw_range or (0, 0)
    if not lo <= raw <= hi:
        raise CodecError(f"point {point.name!r}: raw value {raw} is outside {lo}..{hi}")
    if point.type is PointType.BIT:
        return [int(raw)]
    return _int_to_words(raw & ((1 << (16 * point.width)) - 1), point.width, order)


def _multiplier(point: Point, scale_factor: int | None) -> float | None:
    """The factor raw → engineering value, or None if the point is unscaled."""
    if point.scale is not None:
        return point.scale
    if point.scale_factor is not None:
        if scale_factor is None:
            raise CodecError(f"point {point.name!r}: needs the value of {point.scale_factor!r}")
        return 10.0**scale_factor
    return None


def _digits(multiplier: float) -> int:
    """Decimal places a scaled value can carry, so 123 × 0.1 reads 12.3, not 12.300000000000001."""
    return max(0, -math.floor(math.log10(abs(multiplier)) + 1e-9)) + 1


def decode(point: Point, regs: Sequence[int], scale_factor: int | None = None) -> Value:
    """The engineering value of a point: scaled, with the sentinel mapped to ``None``.

    ``scale_factor`` is the decoded value of the point's SunSpec scale-factor point.
    Bit points decode to ``bool``; enums and bitfields to their integer.
    """
    raw = decode_raw(point, regs)
    if point.na is not None and raw == point.na:
        return None
    if point.type is PointType.BIT:
        return bool(raw)
    if point.scale_factor is not None and scale_factor in (None, SF_NOT_IMPLEMENTED):
        return None
    mult = _multiplier(point, scale_factor)
    if mult is None or isinstance(raw, str):
        return raw
    if isinstance(raw, float) and not math.isfinite(raw):
        return raw
    return round(raw * mult, _digits(mult))


def encode(point: Point, value: Value, scale_factor: int | None = None) -> list[int]:
    """Registers for an engineering value (inverse of :func:`decode`).

    ``None`` encodes the point's not-implemented sentinel. A scaled value is rounded to the
    nearest raw step; a value outside the raw type's range raises :class:`CodecError`.
    """
    if value is None:
        if point.na is None:
            raise CodecError(f"point {point.name!r}: has no not-implemented sentinel to write")
        return encode_raw(point, point.na)
    if point.type is PointType.BIT:
        return encode_raw(point, 1 if value else 0)
    if isinstance(value, str):
        return encode_raw(point, value)
    if isinstance(value, bool):
        value = int(value)
    mult = _multiplier(point, scale_factor)
    if point.type is PointType.F32:
        return encode_raw(point, value / mult if mult else value)
    raw = value if mult is None else value / mult
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise CodecError(f"point {point.name!r}: cannot encode {value!r}")
        raw = round(raw)
    return encode_raw(point, raw)

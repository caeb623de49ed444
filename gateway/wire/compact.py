"""Compact telemetry (schema version 2): the same batches as JSON version 1, in a twentieth of
the bytes (for people: docs/wire.md, "Compact telemetry").

A gateway names its points once per configuration in a :class:`PointMap` (every device and
its points, in order; identified by a hash of its content) and a batch refers to them by
index. Readings of one device read at one time form a snapshot sharing that time; values are
written in the fewest bytes that give back the very same value; the whole batch is
compressed with zlib (the standard library's: nothing to pin). A batch carries its map
inline when the gateway starts and every ``point_map_every_s`` after (``[uplink]``); a
reader keeps the maps it has seen (:class:`PointMaps`, content-addressed, so one store
serves every gateway) and refuses a batch whose map it has not seen with
:class:`UnknownPointMap`, naming the map.

Layout: the byte ``0x02`` (a JSON payload starts with ``{``), then zlib of::

    flags u8 (bit 0: the map is inline) · seq uvarint · at µs uvarint · map id 8 bytes
    [map: devices uvarint, each: name str, points uvarint, each: name str]
    snapshots uvarint, each: device index uvarint · t − at in µs svarint · readings uvarint ·
      point index − (previous + 1) svarint for each reading · a value cell for each reading
    value cell: quality << 4 | tag, then by tag: 0 null, 1 false, 2 true, 3 integer svarint,
      4 decimal (digits svarint, exponent svarint), 5 float64 little-endian, 6 str

``str`` is its UTF-8 length (uvarint) and bytes; svarint is zigzag. Times travel to the
microsecond; NaN and infinities as null, as in version 1. :func:`decode_batch` gives back a
:class:`gateway.wire.TelemetryBatch`, so what reads version 1 reads version 2 unchanged.
"""

from __future__ import annotations

import hashlib
import math
import struct
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway import wire
from gateway.errors import WireError

VERSION = 2
MAGIC = b"\x02"
INLINE_MAP = 0x01
Quality = Literal["good", "stale", "bad", "offline"]
QUALITIES: tuple[Quality, ...] = ("good", "stale", "bad", "offline")
_QUALITY: dict[str, int] = {q: i << 4 for i, q in enumerate(QUALITIES)}
NULL, FALSE, TRUE, INT, DECIMAL, FLOAT, STR = range(7)
#: A batch's body may not inflate beyond this (a small payload may not claim a huge one).
MAX_BODY = 4 * 1024 * 1024
#: How many maps a reader keeps (the oldest goes first).
MAPS_KEPT = 1024
_DOUBLE = struct.Struct("<d")
_MICRO = 1_000_000

#: (device, point, value, quality, wall-clock time): one reading as the encoder takes it.
Fields = tuple[str, str, wire.Scalar, str, float]
#: The same, as the decoder gives it back.
Read = tuple[str, str, wire.Scalar, Quality, float]


class UnknownPointMap(WireError):
    """A compact batch refers to a point map this reader has not seen (yet)."""

    def __init__(self, map_id: str, seq: int) -> None:
        super().__init__(
            f"compact telemetry batch {seq} refers to point map {map_id}, not seen here yet: "
            "the gateway sends it inline at start and every point_map_every_s"
        )
        self.map_id = map_id
        self.seq = seq


class MissingPoints(WireError):
    """Readings of points the point map does not have (encode again with a map extended by
    :attr:`points`)."""

    def __init__(self, points: list[tuple[str, str]]) -> None:
        names = ", ".join(f"{d}.{p}" for d, p in points[:5])
        super().__init__(f"points not in the point map: {names}")
        self.points = points


@dataclass(frozen=True)
class PointMap:
    """Every device of a gateway and its points, in order: a reading names its point by
    (device index, point index)."""

    devices: tuple[tuple[str, tuple[str, ...]], ...]
    body: bytes = field(init=False, repr=False, compare=False)
    id: str = field(init=False, compare=False)
    index: dict[tuple[str, str], tuple[int, int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        out = bytearray()
        _uvarint(out, len(self.devices))
        index: dict[tuple[str, str], tuple[int, int]] = {}
        for d, (device, points) in enumerate(self.devices):
            _str(out, device)
            _uvarint(out, len(points))
            for p, point in enumerate(points):
                _str(out, point)
                index.setdefault((device, point), (d, p))
        body = bytes(out)
        object.__setattr__(self, "body", body)
        object.__setattr__(self, "id", hashlib.sha256(body).hexdigest()[:16])
        object.__setattr__(self, "index", index)

    @classmethod
    def of(cls, points: Iterable[tuple[str, str]]) -> PointMap:
        """The map of (device, point) pairs: devices in order of first appearance, each
        one's points in order."""
        devices: dict[str, dict[str, None]] = {}
        for device, point in points:
            devices.setdefault(device, {})[point] = None
        return cls(tuple((d, tuple(ps)) for d, ps in devices.items()))

    def extended(self, points: Iterable[tuple[str, str]]) -> PointMap:
        """This map with the points it lacks added at the end (a new map, a new id)."""
        missing = [key for key in points if key not in self.index]
        if not missing:
            return self
        return PointMap.of([(d, p) for d, ps in self.devices for p in ps] + missing)

    def names(self) -> dict[str, list[str]]:
        """device → its points, for people (``gateway wire decode``)."""
        return {device: list(points) for device, points in self.devices}


class PointMaps:
    """The point maps a reader has seen, by id (the fleet keeps one for all gateways)."""

    def __init__(self, kept: int = MAPS_KEPT) -> None:
        self._kept = kept
        self._maps: OrderedDict[str, PointMap] = OrderedDict()

    def learn(self, point_map: PointMap) -> None:
        self._maps[point_map.id] = point_map
        self._maps.move_to_end(point_map.id)
        while len(self._maps) > self._kept:
            self._maps.popitem(last=False)

    def get(self, map_id: str) -> PointMap | None:
        return self._maps.get(map_id)

    def __len__(self) -> int:
        return len(self._maps)


#: The process's maps: :func:`gateway.wire.decode` reads compact batches against these.
MAPS = PointMaps()


def is_compact(data: bytes) -> bool:
    return data[:1] == MAGIC


# -- encoding --------------------------------------------------------------------------------


def encode_batch(
    seq: int, at: float, readings: Sequence[Fields], point_map: PointMap, *, inline: bool
) -> bytes:
    """A compact telemetry batch of ``readings``, with the map inline when ``inline``;
    :class:`MissingPoints` when a reading's point is not in ``point_map`` (extend it with
    :meth:`PointMap.extended` and encode again)."""
    out = bytearray()
    out.append(INLINE_MAP if inline else 0)
    at_us = round(at * _MICRO)
    _uvarint(out, seq)
    _uvarint(out, at_us)
    out += bytes.fromhex(point_map.id)
    if inline:
        out += point_map.body
    index = point_map.index
    snapshots: list[tuple[int, int, list[int], list[tuple[wire.Scalar, str]]]] = []
    points: list[int] = []
    rows: list[tuple[wire.Scalar, str]] = []
    last_device: str | None = None
    last_t = 0.0
    for device, point, value, quality, t in readings:
        where = index.get((device, point))
        if where is None:
            raise MissingPoints([(r[0], r[1]) for r in readings if (r[0], r[1]) not in index])
        if device != last_device or t != last_t:
            points, rows = [], []
            snapshots.append((where[0], round(t * _MICRO) - at_us, points, rows))
            last_device, last_t = device, t
        points.append(where[1])
        rows.append((value, quality))
    _uvarint(out, len(snapshots))
    qualities = _QUALITY
    for d, dt, points, rows in snapshots:
        _uvarint(out, d)
        _svarint(out, dt)
        _uvarint(out, len(points))
        previous = -1
        for p in points:
            step = p - previous - 1
            if step == 0:  # the next point of the map: the common case
                out.append(0)
            else:
                _svarint(out, step)
            previous = p
        for value, quality in rows:
            head = qualities[quality]
            if type(value) is int:  # the commonest value, written here without a call
                out.append(head | INT)
                n = value << 1 if value >= 0 else ((-value) << 1) - 1
                while n >= 0x80:
                    out.append((n & 0x7F) | 0x80)
                    n >>= 7
                out.append(n)
            else:
                _value(out, value, head)
    data = MAGIC + zlib.compress(out, 6)
    if len(data) > wire.MAX_PAYLOAD:
        raise WireError(f"compact telemetry batch: {len(data)} bytes > {wire.MAX_PAYLOAD}")
    return data


def _uvarint(out: bytearray, n: int) -> None:
    if n < 0x80:
        out.append(n)
        return
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _svarint(out: bytearray, n: int) -> None:
    _uvarint(out, n << 1 if n >= 0 else ((-n) << 1) - 1)


def _str(out: bytearray, text: str) -> None:
    data = text.encode()
    _uvarint(out, len(data))
    out += data


def _value(out: bytearray, v: object, quality: int) -> None:
    if v is None:
        out.append(quality | NULL)
    elif v is True:
        out.append(quality | TRUE)
    elif v is False:
        out.append(quality | FALSE)
    elif type(v) is int:
        out.append(quality | INT)
        _svarint(out, v)
    elif type(v) is float:
        if not math.isfinite(v):
            out.append(quality | NULL)  # as version 1 writes it
            return
        digits, exponent = _decimal(v)
        if digits is None or exponent is None:
            out.append(quality | FLOAT)
            out += _DOUBLE.pack(v)
        else:
            out.append(quality | DECIMAL)
            _svarint(out, digits)
            _svarint(out, exponent)
    elif isinstance(v, str):
        out.append(quality | STR)
        _str(out, v)
    elif isinstance(v, int):  # an int subclass (an IntEnum): its integer
        out.append(quality | INT)
        _svarint(out, int(v))
    elif isinstance(v, float):
        _value(out, float(v), quality)
    else:
        raise WireError(f"a reading's value {v!r}: expected a number, boolean, text or null")


def _decimal(v: float) -> tuple[int, int] | tuple[None, None]:
    """The shortest decimal that reads back as ``v`` (Python's repr), as (digits, exponent);
    (None, None) when the raw 8 bytes are as short or the sign of a zero would be lost."""
    text = repr(v)
    mantissa, _, exp = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    if fraction == "0":
        fraction = ""
    digits = int(whole + fraction)
    if digits == 0 and text.startswith("-"):
        return None, None
    if abs(digits) >= 1 << 48:
        return None, None
    return digits, (int(exp) if exp else 0) - len(fraction)


# -- decoding --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decoded:
    """A compact batch as it came: its map (None when neither inline nor known) and its
    readings as plain tuples (device, point, value, quality, t)."""

    seq: int
    at: float
    map_id: str
    inline: bool
    point_map: PointMap
    readings: list[Read]


def read_batch(data: bytes, maps: PointMaps | None = None) -> Decoded:
    """Decode a compact batch; an inline map is learnt by ``maps`` (default :data:`MAPS`).
    WireError says what is wrong; :class:`UnknownPointMap` when the map is not known."""
    maps = MAPS if maps is None else maps
    if not is_compact(data):
        raise WireError("not a compact telemetry batch: it does not start with byte 0x02")
    try:
        inflater = zlib.decompressobj()
        body = inflater.decompress(data[1:], MAX_BODY)
    except zlib.error as exc:
        raise WireError(f"compact telemetry batch: not zlib data ({exc})") from None
    if inflater.unconsumed_tail:
        raise WireError(f"compact telemetry batch: inflates beyond {MAX_BODY} bytes")
    if not inflater.eof:
        raise WireError("compact telemetry batch: the zlib stream is cut short")
    if inflater.unused_data:
        raise WireError("compact telemetry batch: bytes after the end of the zlib stream")
    reader = _Reader(body)
    flags = reader.byte()
    if flags & ~INLINE_MAP:
        raise WireError(f"compact telemetry batch: unknown flags {flags:#04x}")
    seq = reader.uvarint()
    if seq < 1:
        raise WireError("compact telemetry batch: seq must be ≥ 1")
    at_us = reader.uvarint()
    map_id = reader.take(8).hex()
    inline = bool(flags & INLINE_MAP)
    if inline:
        start = reader.pos
        point_map = _read_map(reader)
        if body[start : reader.pos] != point_map.body or point_map.id != map_id:
            raise WireError(
                f"compact telemetry batch {seq}: its inline map is not map {map_id} "
                f"(it hashes to {point_map.id})"
            )
        maps.learn(point_map)
    else:
        known = maps.get(map_id)
        if known is None:
            raise UnknownPointMap(map_id, seq)
        point_map = known
    devices = point_map.devices
    readings: list[Read] = []
    for _ in range(reader.uvarint()):
        d = reader.uvarint()
        if d >= len(devices):
            raise WireError(
                f"compact telemetry batch {seq}: device index {d}, map {map_id} has "
                f"{len(devices)} devices"
            )
        device, points = devices[d]
        t = (at_us + reader.svarint()) / _MICRO
        count = reader.uvarint()
        if count > len(body):
            raise WireError(f"compact telemetry batch {seq}: {count} readings cannot fit")
        names = []
        previous = -1
        for _ in range(count):
            p = previous + 1 + reader.svarint()
            if not 0 <= p < len(points):
                raise WireError(
                    f"compact telemetry batch {seq}: point index {p} of {device}, which has "
                    f"{len(points)} points in map {map_id}"
                )
            names.append(points[p])
            previous = p
        for name in names:
            value, quality = reader.cell()
            readings.append((device, name, value, quality, t))
    if reader.pos != len(body):
        raise WireError(f"compact telemetry batch {seq}: {len(body) - reader.pos} bytes left over")
    return Decoded(seq, at_us / _MICRO, map_id, inline, point_map, readings)


def _read_map(reader: _Reader) -> PointMap:
    devices = []
    for _ in range(reader.uvarint()):
        device = reader.text()
        count = reader.uvarint()
        if count > reader.left:
            raise WireError(f"point map: device {device!r} claims {count} points")
        devices.append((device, tuple(reader.text() for _ in range(count))))
    return PointMap(tuple(devices))


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise WireError(f"compact telemetry batch: cut short at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise WireError(f"compact telemetry batch: cut short at byte {self.pos}")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uvarint(self) -> int:
        data, pos = self.data, self.pos
        if pos < len(data) and data[pos] < 0x80:  # the common case: one byte
            self.pos = pos + 1
            return data[pos]
        n = shift = 0
        while True:
            if pos >= len(data):
                raise WireError(f"compact telemetry batch: cut short at byte {pos}")
            if shift > 640:
                raise WireError(f"compact telemetry batch: a number too long at byte {pos}")
            b = data[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                self.pos = pos
                return n

    def svarint(self) -> int:
        n = self.uvarint()
        return n >> 1 if not n & 1 else -((n + 1) >> 1)

    def text(self) -> str:
        data = self.take(self.uvarint())
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise WireError(
                f"compact telemetry batch: text that is not UTF-8 before byte {self.pos}"
            ) from None

    def cell(self) -> tuple[wire.Scalar, Quality]:
        head = self.byte()
        q, tag = head >> 4, head & 0x0F
        if q >= len(QUALITIES):
            raise WireError(f"compact telemetry batch: quality code {q} at byte {self.pos - 1}")
        quality = QUALITIES[q]
        if tag == NULL:
            return None, quality
        if tag == FALSE:
            return False, quality
        if tag == TRUE:
            return True, quality
        if tag == INT:
            return self.svarint(), quality
        if tag == DECIMAL:
            digits, exponent = self.svarint(), self.svarint()
            if abs(exponent) > 400:
                raise WireError(
                    f"compact telemetry batch: exponent {exponent} before byte {self.pos}"
                )
            value = float(f"{digits}e{exponent}")
            return (value if math.isfinite(value) else None), quality
        if tag == FLOAT:
            value = _DOUBLE.unpack(self.take(8))[0]
            return (value if math.isfinite(value) else None), quality
        if tag == STR:
            return self.text(), quality
        raise WireError(f"compact telemetry batch: value tag {tag} at byte {self.pos - 1}")


def decode_batch(data: bytes, maps: PointMaps | None = None) -> wire.TelemetryBatch:
    """A compact batch as the :class:`gateway.wire.TelemetryBatch` it stands for (the model
    version 1 reads), its readings in the order the gateway wrote them."""
    batch = read_batch(data, maps)
    construct = wire.Reading.model_construct
    return wire.TelemetryBatch(
        seq=batch.seq,
        at=batch.at,
        readings=[construct(d=d, p=p, v=v, q=q, t=t) for d, p, v, q, t in batch.readings],
    )


def readable(data: bytes, maps: PointMaps | None = None) -> dict[str, Any]:
    """A telemetry payload of either version as JSON-able data for people and tools: version
    1 as it is, version 2 in version 1's fields plus ``map`` (its id) and, when it came
    inline, ``point_map`` (device → points). WireError when it is neither."""
    if not is_compact(data):
        raw = wire.decode(wire.TelemetryBatch, data)
        return raw.model_dump()
    batch = read_batch(data, maps)
    out: dict[str, Any] = {"v": VERSION, "seq": batch.seq, "at": batch.at, "map": batch.map_id}
    if batch.inline:
        out["point_map"] = batch.point_map.names()
    out["readings"] = [{"d": d, "p": p, "v": v, "q": q, "t": t} for d, p, v, q, t in batch.readings]
    return out

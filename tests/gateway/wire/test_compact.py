"""Compact telemetry (version 2): any batch round-trips exactly, version 1 still decodes, the
bytes per reading stay small, and bad input is refused with a reason."""

from __future__ import annotations

import zlib
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import wire
from gateway.wire import compact

names = st.from_regex(r"^[a-z0-9][a-z0-9-]{0,10}$", fullmatch=True)
points = st.from_regex(r"^[a-z][a-z0-9_]{0,10}$", fullmatch=True)
values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=20),
    st.floats(allow_nan=False, allow_infinity=False),
)  # fmt: skip
qualities = st.sampled_from(compact.QUALITIES)
# times to the microsecond, as the compact form carries them
micros = st.integers(0, 2_000_000_000_000_000).map(lambda us: us / 1_000_000)


@st.composite
def batches(draw: st.DrawFn) -> tuple[int, float, list[compact.Fields], compact.PointMap]:
    keys = draw(st.lists(st.tuples(names, points), min_size=1, max_size=12, unique=True))
    point_map = compact.PointMap.of(keys)
    readings: list[compact.Fields] = [
        (*draw(st.sampled_from(keys)), draw(values), draw(qualities), draw(micros))
        for _ in range(draw(st.integers(0, 30)))
    ]
    return draw(st.integers(1, 2**40)), draw(micros), readings, point_map


def as_batch(seq: int, at: float, readings: list[compact.Fields]) -> wire.TelemetryBatch:
    return wire.TelemetryBatch(
        seq=seq,
        at=at,
        readings=[
            wire.Reading(d=d, p=p, v=v, q=cast(compact.Quality, q), t=t)
            for d, p, v, q, t in readings
        ],
    )


@given(batches())
def test_any_batch_round_trips_exactly(
    case: tuple[int, float, list[compact.Fields], compact.PointMap],
) -> None:
    """Values (their type too: 1 is not 1.0, -0.0 keeps its sign), qualities, times and the
    order of readings: the fleet gets the batch version 1 would have given it."""
    seq, at, readings, point_map = case
    data = compact.encode_batch(seq, at, readings, point_map, inline=True)
    decoded = wire.decode(wire.TelemetryBatch, data)
    assert decoded == as_batch(seq, at, readings)
    for got, (_, _, value, _, _) in zip(decoded.readings, readings, strict=True):
        assert type(got.v) is type(value)
        assert repr(got.v) == repr(value)


@given(batches())
def test_a_batch_without_its_map_decodes_against_a_map_seen_before(
    case: tuple[int, float, list[compact.Fields], compact.PointMap],
) -> None:
    seq, at, readings, point_map = case
    maps = compact.PointMaps()
    with pytest.raises(compact.UnknownPointMap, match=point_map.id):
        compact.read_batch(compact.encode_batch(seq, at, readings, point_map, inline=False), maps)
    compact.read_batch(compact.encode_batch(seq, at, [], point_map, inline=True), maps)
    batch = compact.read_batch(
        compact.encode_batch(seq, at, readings, point_map, inline=False), maps
    )
    assert batch.readings == readings


@given(
    seq=st.integers(1, 2**40),
    readings=st.lists(
        st.builds(wire.Reading, d=names, p=points, v=values, q=qualities, t=st.floats(0, 2e9)),
        max_size=20,
    ),
)
def test_version_1_batches_still_decode(seq: int, readings: list[wire.Reading]) -> None:
    batch = wire.TelemetryBatch(seq=seq, at=1.7e9, readings=readings)
    assert wire.decode(wire.TelemetryBatch, wire.encode(batch)) == batch


def test_non_finite_values_travel_as_null_as_in_version_1() -> None:
    point_map = compact.PointMap.of([("m", "a"), ("m", "b")])
    readings: list[compact.Fields] = [
        ("m", "a", float("nan"), "good", 1.0),
        ("m", "b", float("-inf"), "bad", 1.0),
    ]
    batch = compact.decode_batch(compact.encode_batch(1, 1.0, readings, point_map, inline=True))
    assert [r.v for r in batch.readings] == [None, None]


def test_a_site_snapshot_costs_about_a_byte_per_reading() -> None:
    """50 registers of one device read at once, with the map sent earlier: the bench's
    snapshot, far below the 4 bytes per reading the broker may see."""
    keys = [(f"dev-{d}", f"r{i}") for d in range(10) for i in range(50)]
    point_map = compact.PointMap.of(keys)
    snapshot: list[compact.Fields] = [
        ("dev-3", f"r{i}", 4711, "good", 1764000000.123456) for i in range(50)
    ]
    data = compact.encode_batch(9, 1764000000.2, snapshot, point_map, inline=False)
    assert len(data) / 50 < 1.5
    varied: list[compact.Fields] = [
        ("dev-3", f"r{i}", round(230 + i * 0.1, 1), "good", 1764000000.123456) for i in range(50)
    ]
    assert len(compact.encode_batch(9, 1764000000.2, varied, point_map, inline=False)) / 50 < 4


def test_the_map_grows_for_a_point_it_lacks_under_a_new_id() -> None:
    first = compact.PointMap.of([("m", "a")])
    grown = first.extended([("m", "a"), ("m", "b"), ("n", "a")])
    assert grown.names() == {"m": ["a", "b"], "n": ["a"]}
    assert grown.id != first.id
    assert first.extended([("m", "a")]) is first


def _body(data: bytes) -> bytes:
    return zlib.decompress(data[1:])


def _pack(body: bytes) -> bytes:
    return compact.MAGIC + zlib.compress(body)


GOOD = compact.encode_batch(
    3, 10.0, [("m", "a", 1.5, "good", 10.0)], compact.PointMap.of([("m", "a")]), inline=True
)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (compact.MAGIC + b"not zlib", "not zlib data"),
        (GOOD[:-3], "cut short"),
        (GOOD + b"x", "bytes after the end"),
        (_pack(_body(GOOD)[:-1]), "cut short"),
        (_pack(_body(GOOD) + b"\x00"), "left over"),
        (_pack(b"\x80" + _body(GOOD)[1:]), "unknown flags"),
        (_pack(_body(GOOD)[:-3] + b"\x70"), "quality code 7"),
        (_pack(_body(GOOD).replace(b"m", b"n", 1)), "inline map is not map"),
        (_pack(bytes([0, 0, 0]) + bytes(8) + b"\x00"), "seq must be"),
        (compact.MAGIC + zlib.compress(b"\x00" * (compact.MAX_BODY + 1)), "inflates beyond"),
    ],
)
def test_bad_compact_payloads_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(wire.WireError, match=reason):
        wire.decode(wire.TelemetryBatch, data)

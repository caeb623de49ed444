"""What the producer puts in the outbox in compact telemetry: the site's point map inline in
the first batch, and a point the map lacks still reported, under a grown map sent inline."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway import wire
from gateway.image import Quality, Sample
from gateway.uplink.config import UplinkConfig
from gateway.uplink.link import Uplink
from gateway.wire import compact

GOOD = Quality.GOOD


def outbox(path: Path) -> list[compact.Decoded]:
    maps = compact.PointMaps()
    with sqlite3.connect(path / "outbox.sqlite") as db:
        rows = db.execute("SELECT payload FROM outbox ORDER BY id").fetchall()
    return [compact.read_batch(p, maps) for (p,) in rows]


async def test_the_map_goes_inline_first_and_grows_for_a_point_it_lacks(tmp_path: Path) -> None:
    config = UplinkConfig(broker="mqtt://127.0.0.1:9", reconnect_min_s=5, point_map_every_s=3600)
    units = {("meter", "w"): "W", ("meter", "v"): "V"}
    async with Uplink(config, site="s", gateway="g", state_dir=tmp_path, units=units) as up:
        up.on_sample("meter", "w", Sample(1200.5, 0.0, GOOD))
        await up.flush()
        up.on_sample("meter", "v", Sample(231, 0.0, GOOD))
        await up.flush()
        up.on_sample("sio", "door", Sample(True, 0.0, GOOD))  # not a point of the site's map
        await up.flush()
    first, second, third = outbox(tmp_path)
    assert first.inline
    assert first.point_map.names() == {"meter": ["w", "v"]}
    assert not second.inline
    assert second.map_id == first.map_id
    assert third.inline
    assert third.point_map.names() == {"meter": ["w", "v"], "sio": ["door"]}
    values = [(d, p, v) for b in (first, second, third) for d, p, v, _, _ in b.readings]
    assert values == [("meter", "w", 1200.5), ("meter", "v", 231), ("sio", "door", True)]


async def test_json_keeps_version_1_for_an_old_fleet(tmp_path: Path) -> None:
    config = UplinkConfig(broker="mqtt://127.0.0.1:9", reconnect_min_s=5, wire_format="json")
    async with Uplink(config, site="s", gateway="g", state_dir=tmp_path) as up:
        up.on_sample("meter", "w", Sample(1.5, 0.0, GOOD))
        await up.flush()
    with sqlite3.connect(tmp_path / "outbox.sqlite") as db:
        [(payload,)] = db.execute("SELECT payload FROM outbox").fetchall()
    assert payload.startswith(b'{"v":1,')
    assert wire.decode(wire.TelemetryBatch, payload).readings[0].v == 1.5


def test_encoding_a_point_outside_the_map_names_it() -> None:
    point_map = compact.PointMap.of([("meter", "w")])
    readings: list[compact.Fields] = [
        ("meter", "w", 1, "good", 1.0),
        ("sio", "door", 0, "good", 1.0),
    ]
    with pytest.raises(compact.MissingPoints, match=r"sio\.door") as caught:
        compact.encode_batch(1, 1.0, readings, point_map, inline=False)
    assert caught.value.points == [("sio", "door")]


async def test_the_map_goes_inline_again_when_asked_for(tmp_path: Path) -> None:
    config = UplinkConfig(broker="mqtt://127.0.0.1:9", reconnect_min_s=5, point_map_every_s=3600)
    units = {("meter", "w"): "W"}
    async with Uplink(config, site="s", gateway="g", state_dir=tmp_path, units=units) as up:
        for value in (1, 2, 3):
            if value == 3:
                up._producer.send_point_map()  # what a fleet's request for the map does
            up.on_sample("meter", "w", Sample(value, 0.0, GOOD))
            await up.flush()
    assert [b.inline for b in outbox(tmp_path)] == [True, False, True]

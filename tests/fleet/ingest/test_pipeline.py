"""Ingest stores what registered gateways publish, once, and refuses everything else with a
reason it counts, logs and stores; on SQLite and on a real PostgreSQL (``fleet_db_url``)."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from fleet.core.db import async_url, create_engine, open_database, sessions
from fleet.errors import RegistryError
from fleet.ingest.ingest import Ingest
from fleet.ingest.pipeline import feed
from fleet.ingest.rejections import REJECTION_LOG_EVERY_S, RejectionLog
from fleet.models import (
    Alarm,
    Device,
    Gap,
    Gateway,
    IngestRejection,
    LatestValue,
    ReceivedBatch,
    Sample,
    Site,
)
from fleet.registry import list_gateways, register_gateway
from gateway import wire
from hil_tests.postgres import PostgresServer

T0 = 1_700_000_000.0  # Nov 2023: before any time ingest itself stamps
SITE, GW = "s1", "gw1"


def at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def topic(kind: wire.Kind, gateway: str = GW) -> str:
    return wire.topic(SITE, gateway, kind)


def telemetry(seq: int, *readings: tuple[str, str, wire.Scalar, float]) -> bytes:
    return wire.encode(
        wire.TelemetryBatch(
            seq=seq,
            at=T0 + seq,
            readings=[wire.Reading(d=d, p=p, v=v, q="good", t=t) for d, p, v, t in readings],
        )
    )


def event(
    event_id: int, kind: str, key: str = "fire", by: str | None = None, **extra: Any
) -> wire.Event:
    return wire.Event(
        id=event_id,
        kind=kind,  # type: ignore[arg-type]
        key=key,
        severity="critical",
        interlock="I1",
        device="panel",
        message=f"{key} {kind}",
        values={"zone": 3},
        at=T0 + event_id,
        by=by,
        **extra,
    )


def events(seq: int, *batch: wire.Event) -> bytes:
    return wire.encode(wire.EventBatch(seq=seq, at=T0 + seq, events=list(batch)))


@dataclass
class Fleet:
    ingest: Ingest
    sessions: async_sessionmaker[AsyncSession]

    async def send(self, kind: wire.Kind, payload: bytes, gateway: str = GW) -> str:
        return (await self.ingest.handle(topic(kind, gateway), payload)).status

    async def rows(self, model: type[Any], *where: Any) -> list[Any]:
        async with self.sessions() as s:
            return list((await s.scalars(select(model).where(*where))).all())

    async def count(self, model: type[Any]) -> int:
        async with self.sessions() as s:
            return int(await s.scalar(select(func.count()).select_from(model)) or 0)

    async def latest(self) -> dict[tuple[str, str], tuple[Any, datetime]]:
        async with self.sessions() as s:
            rows = await s.execute(
                select(Device.name, LatestValue.point, LatestValue.value, LatestValue.at).join(
                    Device
                )
            )
            return {(d, p): (v, t) for d, p, v, t in rows}

    async def open_gaps(self) -> list[tuple[int, int]]:
        gaps = await self.rows(Gap, Gap.closed_at.is_(None))
        return sorted((g.first, g.last) for g in gaps)


@pytest.fixture
async def fleet(fleet_db_url: str) -> AsyncIterator[Fleet]:
    engine = await open_database(fleet_db_url)
    make = sessions(engine)
    async with make.begin() as session:
        await register_gateway(session, SITE, GW, "Site one")
    yield Fleet(Ingest(make), make)
    await engine.dispose()


# -- registration ------------------------------------------------------------------------------


async def test_registering_a_gateway_again_returns_the_same_one(fleet: Fleet) -> None:
    async with fleet.sessions.begin() as session:
        again = await register_gateway(session, SITE, GW, "a later title")
        other = await register_gateway(session, SITE, "gw2")
        elsewhere = await register_gateway(session, "s2", GW, "Site two")
    [first] = await fleet.rows(Gateway, Gateway.name == GW, Gateway.site_id == again.site_id)
    assert again.id == first.id
    assert len({again.id, other.id, elsewhere.id}) == 3
    async with fleet.sessions() as session:
        assert await list_gateways(session) == [(SITE, GW), (SITE, "gw2"), ("s2", GW)]
        assert [s.title for s in await session.scalars(select(Site).order_by(Site.name))] == [
            "Site one",
            "Site two",
        ]


async def test_a_name_that_cannot_be_a_topic_level_is_refused(fleet: Fleet) -> None:
    async with fleet.sessions.begin() as session:
        for name in ["", "Gw1", "gw_1", "-gw", "g" * 49, "gw/1", "gw+", "gw#"]:
            with pytest.raises(RegistryError, match=re.escape(f"gateway name {name!r}: expected")):
                await register_gateway(session, SITE, name)
            with pytest.raises(RegistryError, match=re.escape(f"site name {name!r}: expected")):
                await register_gateway(session, name, GW)
    assert await fleet.count(Gateway) == 1


# -- state and health --------------------------------------------------------------------------


async def test_state_marks_the_gateway_online_and_names_its_devices(fleet: Fleet) -> None:
    state = wire.State(
        status="online",
        version="1.4.2",
        started_at=T0 - 60,
        at=T0,
        devices={"charger-1": "EVSE-HEC", "lift": "ELV-2"},
    )
    assert await fleet.send(wire.Kind.STATE, wire.encode(state)) == "stored"
    [gw] = await fleet.rows(Gateway)
    assert (gw.online, gw.version, gw.started_at, gw.state_at) == (
        True,
        "1.4.2",
        at(T0 - 60),
        at(T0),
    )
    assert gw.last_seen is not None
    devices = {d.name: d.model for d in await fleet.rows(Device)}
    assert devices == {"charger-1": "EVSE-HEC", "lift": "ELV-2"}

    # the last will: offline, no time of its own; a model that changed is updated
    will = wire.State(status="offline", version="1.4.2", devices={"lift": "ELV-3"})
    assert await fleet.send(wire.Kind.STATE, wire.encode(will)) == "stored"
    [gw] = await fleet.rows(Gateway)
    assert gw.online is False
    assert gw.state_at is not None
    assert gw.state_at > at(T0)
    devices = {d.name: d.model for d in await fleet.rows(Device)}
    assert devices == {"charger-1": "EVSE-HEC", "lift": "ELV-3"}

    # the broker hands the retained will out again at ingest's next subscription
    offline_since = gw.state_at
    assert await fleet.send(wire.Kind.STATE, wire.encode(will)) == "stored"
    [gw] = await fleet.rows(Gateway)
    assert (gw.online, gw.state_at) == (False, offline_since)
    assert fleet.ingest.stats()["accepted"] == {"state": 3}


async def test_the_last_will_handed_out_again_is_no_sign_of_life(fleet: Fleet) -> None:
    """A gateway dead for days: its retained will comes at every ingest subscription and
    must not make it look seen seconds ago; a state with its own time is a sign of life."""
    online = wire.State(status="online", version="1.0", started_at=T0, at=T0, devices={})
    assert await fleet.send(wire.Kind.STATE, wire.encode(online)) == "stored"
    [gw] = await fleet.rows(Gateway)
    assert gw.last_seen is not None
    assert gw.last_seen > at(T0)  # when the fleet received it
    async with fleet.sessions.begin() as session:  # days pass
        await session.execute(update(Gateway).values(last_seen=at(T0)))
    will = wire.State(status="offline", version="1.0", devices={})
    for _ in range(2):  # it went offline; the broker hands the retained will out again
        assert await fleet.send(wire.Kind.STATE, wire.encode(will)) == "stored"
        [gw] = await fleet.rows(Gateway)
        assert (gw.online, gw.last_seen) == (False, at(T0))
    assert await fleet.send(wire.Kind.STATE, wire.encode(online)) == "stored"
    [gw] = await fleet.rows(Gateway)
    assert gw.online is True
    assert gw.last_seen is not None
    assert gw.last_seen > at(T0 + 86_400)


def health(t: float, depth: int) -> bytes:
    return wire.encode(
        wire.Health(
            at=t,
            uptime_s=100.0,
            version="1.4.2",
            cpu_percent=3.5,
            memory_mib=48.0,
            disk_free_mib=900.0,
            outbox_depth=depth,
            outbox_dropped=0,
            loop={"p99_ms": 4.2},
            buses={"rtu0": {"tx_per_s": 20.5}},
        )
    )


async def test_health_keeps_the_newest_report(fleet: Fleet) -> None:
    assert await fleet.send(wire.Kind.HEALTH, health(T0 + 10, depth=7)) == "stored"
    assert await fleet.send(wire.Kind.HEALTH, health(T0, depth=99)) == "stored"  # an old one
    [gw] = await fleet.rows(Gateway)
    assert gw.health_at == at(T0 + 10)
    assert gw.health["outbox_depth"] == 7
    assert gw.health["buses"] == {"rtu0": {"tx_per_s": 20.5}}


# -- telemetry ---------------------------------------------------------------------------------


async def test_telemetry_stores_samples_latest_values_and_last_seen(fleet: Fleet) -> None:
    payload = telemetry(
        1,
        ("charger-1", "power", 7.4, T0 + 1),
        ("charger-1", "power", 7.1, T0 + 2),
        ("charger-1", "state", "C2", T0 + 1),
        ("lift", "door_open", True, T0 + 3),
        ("lift", "floor", 4, T0 + 3),
        ("lift", "load", None, T0 + 3),
    )
    assert await fleet.send(wire.Kind.TELEMETRY, payload) == "stored"
    samples = await fleet.rows(Sample)
    assert sorted((s.point, s.value, s.num) for s in samples) == sorted(
        [
            ("power", 7.4, 7.4),
            ("power", 7.1, 7.1),
            ("state", "C2", None),
            ("door_open", True, 1.0),
            ("floor", 4, 4.0),
            ("load", None, None),
        ]
    )
    assert await fleet.latest() == {
        ("charger-1", "power"): (7.1, at(T0 + 2)),
        ("charger-1", "state"): ("C2", at(T0 + 1)),
        ("lift", "door_open"): (True, at(T0 + 3)),
        ("lift", "floor"): (4, at(T0 + 3)),
        ("lift", "load"): (None, at(T0 + 3)),
    }
    devices = {d.name: (d.model, d.last_seen) for d in await fleet.rows(Device)}
    assert devices == {"charger-1": ("", at(T0 + 2)), "lift": ("", at(T0 + 3))}
    [gw] = await fleet.rows(Gateway)
    assert gw.last_seen is not None


async def test_an_older_reading_never_replaces_a_newer_latest_value(fleet: Fleet) -> None:
    await fleet.send(wire.Kind.TELEMETRY, telemetry(2, ("pv", "power", 3000, T0 + 20)))
    await fleet.send(wire.Kind.TELEMETRY, telemetry(1, ("pv", "power", 1000, T0 + 10)))
    assert await fleet.latest() == {("pv", "power"): (3000, at(T0 + 20))}
    [device] = await fleet.rows(Device)
    assert device.last_seen == at(T0 + 20)
    assert await fleet.count(Sample) == 2


async def test_a_duplicate_batch_is_counted_and_stored_once(fleet: Fleet) -> None:
    payload = telemetry(1, ("pv", "power", 1000, T0 + 1), ("pv", "energy", 12.5, T0 + 1))
    assert await fleet.send(wire.Kind.TELEMETRY, payload) == "stored"
    assert await fleet.send(wire.Kind.TELEMETRY, payload) == "duplicate"
    assert await fleet.count(Sample) == 2
    assert await fleet.count(ReceivedBatch) == 1
    stats = fleet.ingest.stats()
    assert (stats["accepted"], stats["duplicates"]) == ({"telemetry": 1}, 1)


async def test_gaps_open_and_late_batches_shrink_split_and_close_them(fleet: Fleet) -> None:
    async def batch(seq: int) -> None:
        assert await fleet.send(wire.Kind.TELEMETRY, telemetry(seq, ("pv", "p", seq, T0 + seq)))

    await batch(1)
    assert await fleet.open_gaps() == []
    await batch(6)  # 2..5 missing
    assert await fleet.open_gaps() == [(2, 5)]
    await batch(2)
    assert await fleet.open_gaps() == [(3, 5)]
    await batch(4)
    assert await fleet.open_gaps() == [(3, 3), (5, 5)]
    await batch(5)
    assert await fleet.open_gaps() == [(3, 3)]
    await batch(3)
    assert await fleet.open_gaps() == []
    closed = await fleet.rows(Gap)
    assert all(g.closed_at is not None for g in closed)
    assert fleet.ingest.stats()["gaps_opened"] == 1


async def test_a_first_batch_beyond_one_opens_a_gap_from_one(fleet: Fleet) -> None:
    await fleet.send(wire.Kind.TELEMETRY, telemetry(4, ("pv", "p", 1, T0)))
    assert await fleet.open_gaps() == [(1, 3)]


async def test_a_gateway_removed_after_it_reported_is_refused_then(fleet: Fleet) -> None:
    assert await fleet.send(wire.Kind.TELEMETRY, telemetry(1, ("pv", "p", 1, T0))) == "stored"
    async with fleet.sessions.begin() as session:
        await session.execute(delete(Gateway))
    outcome = await fleet.ingest.handle(
        topic(wire.Kind.TELEMETRY), telemetry(2, ("pv", "p", 2, T0 + 1))
    )
    assert (outcome.status, outcome.reason) == ("rejected", "unknown-gateway")
    async with fleet.sessions.begin() as session:
        await register_gateway(session, SITE, GW)
    # registered again: a new gateway, its batches counted from 1 again, its devices new
    assert await fleet.send(wire.Kind.TELEMETRY, telemetry(1, ("pv", "p", 3, T0 + 2))) == "stored"
    assert await fleet.latest() == {("pv", "p"): (3, at(T0 + 2))}
    assert await fleet.open_gaps() == []


async def test_a_gateway_numbering_from_one_again_is_a_new_stream_not_duplicates(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    """A gateway replaced under the same name (a new outbox) sends seq 1, 2, ... again, at
    other times: stored in a new epoch, the old numbering's gaps closed; replays of either
    numbering are still duplicates."""

    def renewed(seq: int, value: int) -> bytes:  # the new outbox: same numbers, later times
        reading = wire.Reading(d="pv", p="p", v=value, q="good", t=T0 + 1000 + seq)
        return wire.encode(wire.TelemetryBatch(seq=seq, at=T0 + 1000 + seq, readings=[reading]))

    for seq in (1, 2, 5):
        assert await fleet.send(wire.Kind.TELEMETRY, telemetry(seq, ("pv", "p", seq, T0 + seq)))
    assert await fleet.open_gaps() == [(3, 4)]

    caplog.set_level(logging.WARNING, logger="fleet")
    assert await fleet.send(wire.Kind.TELEMETRY, renewed(1, 101)) == "stored"
    [warning] = [r.getMessage() for r in caplog.records]
    assert "'gw1'" in warning
    assert "telemetry" in warning
    assert "sequence restarted at 1: new outbox?" in warning
    assert await fleet.open_gaps() == []  # the old numbering's 3..4 will never come
    assert await fleet.send(wire.Kind.TELEMETRY, renewed(2, 102)) == "stored"
    assert await fleet.send(wire.Kind.TELEMETRY, renewed(4, 104)) == "stored"
    assert await fleet.open_gaps() == [(3, 3)]  # counted from 1 in the new numbering
    # replays of the old and of the new numbering
    assert await fleet.send(wire.Kind.TELEMETRY, telemetry(2, ("pv", "p", 2, T0 + 2))) == (
        "duplicate"
    )
    assert await fleet.send(wire.Kind.TELEMETRY, renewed(2, 102)) == "duplicate"
    assert await fleet.send(wire.Kind.TELEMETRY, telemetry(5, ("pv", "p", 5, T0 + 5))) == (
        "duplicate"
    )
    assert await fleet.send(wire.Kind.TELEMETRY, renewed(3, 103)) == "stored"
    assert await fleet.open_gaps() == []
    assert await fleet.count(Sample) == 7
    assert await fleet.latest() == {("pv", "p"): (104, at(T0 + 1004))}
    assert len([r for r in caplog.records if "restarted" in r.getMessage()]) == 1

    # the events journal restarted too: its event ids start again, at later times
    def later(e: wire.Event) -> wire.Event:
        return e.model_copy(update={"at": T0 + 1000 + e.id})

    def renewed_events(seq: int, *batch: wire.Event) -> bytes:
        return wire.encode(wire.EventBatch(seq=seq, at=T0 + 1000 + seq, events=list(batch)))

    assert await fleet.send(wire.Kind.EVENTS, events(1, event(1, "raised"))) == "stored"
    assert await fleet.send(wire.Kind.EVENTS, events(2, event(2, "cleared"))) == "stored"
    new_raise = renewed_events(1, later(event(1, "raised", key="door")))
    assert await fleet.send(wire.Kind.EVENTS, new_raise) == "stored"
    assert await fleet.send(wire.Kind.EVENTS, new_raise) == "duplicate"
    # the raise again in a batch of its own: the same alarm
    again = renewed_events(2, later(event(1, "raised", key="door")))
    assert await fleet.send(wire.Kind.EVENTS, again) == "stored"
    [door] = await fleet.rows(Alarm, Alarm.key == "door")
    assert (door.raised_event, door.raised_at, door.cleared_at) == (1, at(T0 + 1001), None)
    new_clear = renewed_events(3, later(event(2, "cleared", key="door", by="ann")))
    assert await fleet.send(wire.Kind.EVENTS, new_clear) == "stored"
    [door] = await fleet.rows(Alarm, Alarm.key == "door")
    assert (door.cleared_at, door.cleared_by) == (at(T0 + 1002), "ann")
    assert await fleet.count(Alarm) == 2


# -- events ------------------------------------------------------------------------------------


async def test_events_raise_and_clear_alarms_and_a_replay_never_duplicates(fleet: Fleet) -> None:
    raised = events(1, event(10, "raised"), event(11, "raised", key="door"))
    assert await fleet.send(wire.Kind.EVENTS, raised) == "stored"
    cleared = events(2, event(12, "cleared", by="maintainer-ann"))
    assert await fleet.send(wire.Kind.EVENTS, cleared) == "stored"
    # the gateway's outbox re-sends both batches, and the raise again in a batch of its own
    assert await fleet.send(wire.Kind.EVENTS, raised) == "duplicate"
    assert await fleet.send(wire.Kind.EVENTS, cleared) == "duplicate"
    assert await fleet.send(wire.Kind.EVENTS, events(3, event(10, "raised"))) == "stored"

    alarms = {a.key: a for a in await fleet.rows(Alarm)}
    assert set(alarms) == {"fire", "door"}
    fire, door = alarms["fire"], alarms["door"]
    assert (fire.raised_event, fire.severity, fire.interlock, fire.device) == (
        10,
        "critical",
        "I1",
        "panel",
    )
    assert (fire.message, fire.values, fire.raised_at) == ("fire raised", {"zone": 3}, at(T0 + 10))
    assert (fire.cleared_at, fire.cleared_by) == (at(T0 + 12), "maintainer-ann")
    assert (door.cleared_at, door.cleared_by) == (None, None)
    assert await fleet.open_gaps() == []


async def test_a_clear_closes_only_alarms_raised_before_it(fleet: Fleet) -> None:
    await fleet.send(wire.Kind.EVENTS, events(1, event(1, "raised"), event(2, "cleared")))
    await fleet.send(wire.Kind.EVENTS, events(2, event(3, "raised")))
    await fleet.send(wire.Kind.EVENTS, events(3, event(2, "cleared")))  # the old clear again
    open_alarms = await fleet.rows(Alarm, Alarm.cleared_at.is_(None))
    assert [a.raised_event for a in open_alarms] == [3]


async def test_a_batch_failing_halfway_stores_nothing_of_it(fleet: Fleet) -> None:
    """The second event's key is too long for its column: found after the batch number and
    the first alarm were written; the whole message is rolled back."""
    bad = events(1, event(1, "raised"), event(2, "raised", key="k" * 201))
    outcome = await fleet.ingest.handle(topic(wire.Kind.EVENTS), bad)
    assert (outcome.status, outcome.reason) == ("rejected", "schema")
    assert await fleet.count(ReceivedBatch) == 0
    assert await fleet.count(Alarm) == 0
    good = events(1, event(1, "raised"), event(2, "raised", key="door"))
    assert await fleet.send(wire.Kind.EVENTS, good) == "stored"  # not taken for a duplicate
    assert await fleet.count(Alarm) == 2


# -- bad input ---------------------------------------------------------------------------------

GOOD_TOPIC = topic(wire.Kind.TELEMETRY)
SURROGATE_READING = json.dumps(  # JSON's escape carries a lone surrogate; UTF-8 cannot
    {"v": 1, "seq": 10_000, "at": T0, "readings": [
        {"d": "pv\ud800", "p": "power", "v": 1, "q": "good", "t": T0}]}
).encode()  # fmt: skip
SURROGATE_KEY = json.dumps(
    {"v": 1, "seq": 1, "at": T0, "events": [
        event(1, "raised").model_dump() | {"key": "fire\udfff"}]}
).encode()  # fmt: skip
LOW_EVENT_ID = events(1, event(1, "raised").model_copy(update={"id": -(2**63) - 1}))
NAN_READING = (
    b'{"v": 1, "seq": 1, "at": 0, "readings": '
    b'[{"d": "pv", "p": "power", "v": NaN, "q": "good", "t": 0}]}'
)
BAD_INPUT = [
    ("malformed", GOOD_TOPIC, b'{"v": 1, "seq": '),
    ("malformed", GOOD_TOPIC, b"[1, 2]"),
    ("version", GOOD_TOPIC, b'{"v": 2, "seq": 1, "at": 0, "readings": []}'),
    ("schema", GOOD_TOPIC, b'{"v": 1, "at": 0, "readings": []}'),
    ("schema", GOOD_TOPIC, telemetry(1, ("d" * 65, "p", 1, T0))),
    ("text", GOOD_TOPIC, telemetry(1, ("dev\x00ice", "p", 1, T0))),
    ("text", GOOD_TOPIC, telemetry(1, ("pv", "po\x1bint", 1, T0))),
    ("depth", GOOD_TOPIC, b'{"v": 1, "seq": 1, "at": 0, "readings": ' + b"[" * 50_000),
    ("number", GOOD_TOPIC, telemetry(1).replace(b'"at":1700000001.0', b'"at":1e999')),
    ("schema", GOOD_TOPIC, telemetry(1).replace(b'"seq":1', b'"seq":true')),
    ("schema", GOOD_TOPIC, telemetry(1).replace(b'"seq":1', b'"seq":"2"')),
    ("sequence", GOOD_TOPIC, telemetry(1).replace(b'"seq":1', b'"seq":%d' % 2**62)),
    ("time", GOOD_TOPIC, telemetry(1, ("pv", "p", 1, -9_800_000_000.0))),  # 1659
    ("time", GOOD_TOPIC, telemetry(1, ("pv", "p", 1, 99_999_999_999.0))),  # 5138
    ("number", GOOD_TOPIC, NAN_READING),
    ("time", GOOD_TOPIC, telemetry(1, ("pv", "p", 1, 1e300))),
    ("number", GOOD_TOPIC, telemetry(2**63, ("pv", "p", 1, T0))),
    ("text", GOOD_TOPIC, SURROGATE_READING),
    ("text", topic(wire.Kind.EVENTS), SURROGATE_KEY),
    ("number", topic(wire.Kind.EVENTS), LOW_EVENT_ID),
    ("unknown-gateway", topic(wire.Kind.TELEMETRY, "gw-stranger"), telemetry(1)),
    ("oversized", GOOD_TOPIC, b" " * (wire.MAX_PAYLOAD + 1)),
    ("topic", "doorstep/v1/s1/gw1", telemetry(1)),
    ("topic", "doorstep/v1/s1/gw1/weather", telemetry(1)),
    ("topic", "doorstep/v1/s1/gw1/config/desired", telemetry(1)),
    ("topic", "elsewhere/s1/gw1/telemetry", telemetry(1)),
]


async def test_each_bad_input_is_rejected_counted_logged_and_stored(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fleet.ingest.rejections")
    ticks = itertools.count(0.0, REJECTION_LOG_EVERY_S)  # a minute between rejections
    fleet.ingest = Ingest(fleet.sessions, RejectionLog(clock=lambda: next(ticks)))
    for n, (reason, name, payload) in enumerate(BAD_INPUT, start=1):
        caplog.clear()
        outcome = await fleet.ingest.handle(name, payload)
        assert (outcome.status, outcome.reason) == ("rejected", reason), (name, payload[:80])
        [record] = caplog.records
        assert record.levelno == logging.WARNING
        assert name in record.getMessage()
        assert reason in record.getMessage()
        # ingest goes on: the next good message is stored
        good = telemetry(n, ("pv", "power", n, T0 + n))
        assert await fleet.send(wire.Kind.TELEMETRY, good) == "stored", reason

    stored = [(r.reason, r.topic, r.size) for r in await fleet.rows(IngestRejection)]
    assert sorted(stored) == sorted((r, t[:300], len(p)) for r, t, p in BAD_INPUT)
    expected: dict[str, int] = {}
    for reason, _, _ in BAD_INPUT:
        expected[reason] = expected.get(reason, 0) + 1
    assert fleet.ingest.stats()["rejected"] == expected
    assert fleet.ingest.stats()["accepted"] == {"telemetry": len(BAD_INPUT)}
    assert await fleet.count(Sample) == len(BAD_INPUT)


async def test_a_time_far_ahead_of_the_fleet_clock_is_refused(fleet: Fleet) -> None:
    """A gateway's clock glitch (a year ahead) must not freeze a latest value or the health
    report; a few seconds ahead (clocks differ a little) is fine."""
    now = time.time()
    soon, glitch = now + 10, now + 365 * 86_400
    assert await fleet.send(wire.Kind.TELEMETRY, telemetry(1, ("pv", "p", 1, soon))) == "stored"
    assert await fleet.send(wire.Kind.HEALTH, health(soon, depth=1)) == "stored"
    glitched = [
        (wire.Kind.TELEMETRY, telemetry(2, ("pv", "p", 2, glitch)), "reading t"),
        (wire.Kind.HEALTH, health(glitch, depth=2), "at"),
        (wire.Kind.STATE, wire.encode(wire.State(status="online", version="1", at=glitch)), "at"),
        (wire.Kind.EVENTS, events(1, event(1, "raised").model_copy(update={"at": glitch})),
         "event 1 at"),
    ]  # fmt: skip
    for kind, payload, field in glitched:
        outcome = await fleet.ingest.handle(topic(kind), payload)
        assert (outcome.status, outcome.reason) == ("rejected", "time"), kind
        assert outcome.detail.startswith(f"{field} {at(glitch).isoformat()}: "), outcome.detail
        assert "ahead of the fleet's clock" in outcome.detail
    assert await fleet.latest() == {("pv", "p"): (1, at(soon))}
    [gw] = await fleet.rows(Gateway)
    assert (gw.health_at, gw.state_at) == (at(soon), None)
    assert await fleet.count(Alarm) == 0
    # the next reading with a good clock is taken
    assert await fleet.send(wire.Kind.TELEMETRY, telemetry(2, ("pv", "p", 3, soon + 1))) == (
        "stored"
    )
    assert await fleet.latest() == {("pv", "p"): (3, at(soon + 1))}


async def test_the_same_rejection_is_logged_once_a_minute_but_counted_and_stored_each_time(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    clock = [1000.0]
    fleet.ingest = Ingest(fleet.sessions, RejectionLog(clock=lambda: clock[0]))
    caplog.set_level(logging.WARNING, logger="fleet.ingest.rejections")
    stranger = topic(wire.Kind.TELEMETRY, "gw-stranger")
    for _ in range(5):  # a gateway nobody registered, sending all the time
        await fleet.ingest.handle(stranger, telemetry(1))
        clock[0] += 10
    await fleet.ingest.handle(stranger, b"{")  # another reason: logged
    await fleet.ingest.handle(GOOD_TOPIC, b"{")  # another topic: logged
    assert [r.getMessage()[:60] for r in caplog.records] == [
        f"ingest rejected {stranger!r} (unknown-gateway): gateway"[:60],
        f"ingest rejected {stranger!r} (malformed): "[:60],
        f"ingest rejected {GOOD_TOPIC!r} (malformed): "[:60],
    ]
    caplog.clear()
    clock[0] = 1000.0 + REJECTION_LOG_EVERY_S  # a minute after the first one was logged
    await fleet.ingest.handle(stranger, telemetry(1))
    [record] = caplog.records
    assert "(unknown-gateway)" in record.getMessage()
    assert "and 4 more like it in the last 60 s, not logged" in record.getMessage()
    caplog.clear()
    await fleet.ingest.handle(stranger, telemetry(1))
    assert caplog.records == []
    assert fleet.ingest.stats()["rejected"] == {"unknown-gateway": 7, "malformed": 2}
    assert await fleet.count(IngestRejection) == 9


# -- any order, any duplicates -----------------------------------------------------------------

names = itertools.count(1)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[list[tuple[str, str, int, float]]], list[int]]:
    """Batches 1..N of readings with distinct times, and an order of delivery of their
    indices in which each appears at least once."""
    n = draw(st.integers(1, 7))
    clock = itertools.count(1)
    batches = [
        [
            (f"dev{d}", f"p{p}", draw(st.integers(-5, 5)), T0 + next(clock))
            for d, p in draw(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), max_size=4))
        ]
        for _ in range(n)
    ]
    extra = draw(st.lists(st.integers(0, n - 1), max_size=n))
    order = draw(st.permutations(list(range(n)) + extra))
    return batches, order


async def deliver(
    url: str, batches: list[list[tuple[str, str, int, float]]], order: list[int]
) -> None:
    engine = create_engine(url)
    try:
        make = sessions(engine)
        gateway = f"gw-{next(names)}"
        async with make.begin() as session:
            await register_gateway(session, SITE, gateway)
        ingest = Ingest(make)
        fleet = Fleet(ingest, make)
        for index in order:
            payload = telemetry(index + 1, *batches[index])
            await fleet.send(wire.Kind.TELEMETRY, payload, gateway)

        async with make() as s:
            gw_id = await s.scalar(select(Gateway.id).where(Gateway.name == gateway))
            seqs = (await s.scalars(select(ReceivedBatch.seq).where(
                ReceivedBatch.gateway_id == gw_id))).all()  # fmt: skip
            samples = (await s.execute(
                select(Device.name, Sample.point, Sample.value, Sample.at).join(Device)
                .where(Device.gateway_id == gw_id))).all()  # fmt: skip
            latest = (await s.execute(
                select(Device.name, LatestValue.point, LatestValue.value, LatestValue.at)
                .join(Device).where(Device.gateway_id == gw_id))).all()  # fmt: skip
            open_gaps = (await s.scalars(select(Gap).where(
                Gap.gateway_id == gw_id, Gap.closed_at.is_(None)))).all()  # fmt: skip

        readings = [r for batch in batches for r in batch]
        assert sorted(seqs) == list(range(1, len(batches) + 1))
        assert sorted(samples) == sorted((d, p, v, at(t)) for d, p, v, t in readings)
        newest: dict[tuple[str, str], tuple[int, float]] = {}
        for d, p, v, t in readings:
            if (d, p) not in newest or newest[(d, p)][1] < t:
                newest[(d, p)] = (v, t)
        assert {(d, p): (v, t) for d, p, v, t in latest} == {
            k: (v, at(t)) for k, (v, t) in newest.items()
        }
        assert open_gaps == []
        assert ingest.stats()["duplicates"] == len(order) - len(batches)
    finally:
        await engine.dispose()


def test_any_order_with_duplicates_stores_each_batch_once(fleet_db_url: str) -> None:
    asyncio.run(_migrate(fleet_db_url))

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(deliveries())
    def check(case: tuple[list[list[tuple[str, str, int, float]]], list[int]]) -> None:
        asyncio.run(deliver(fleet_db_url, *case))

    check()


async def _migrate(url: str) -> None:
    engine = await open_database(url)
    await engine.dispose()


# -- the database goes away --------------------------------------------------------------------


async def test_a_message_arriving_while_the_database_is_down_is_stored_when_it_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ingest holds the message (and everything behind it, unacknowledged on the broker) and
    tries again until the database takes it, instead of losing the batch."""
    with PostgresServer() as server:
        engine = await open_database(server.fresh_database())
        make = sessions(engine)
        async with make.begin() as session:
            await register_gateway(session, SITE, GW)
        fleet = Fleet(Ingest(make), make)
        assert await fleet.send(wire.Kind.TELEMETRY, telemetry(1, ("m", "w", 1.0, T0))) == "stored"
        await engine.dispose()  # no pooled connection survives the outage
        server.stop()
        message = aiomqtt.Message(topic(wire.Kind.TELEMETRY), telemetry(2, ("m", "w", 2.0, T0 + 1)),
                                  qos=1, retain=False, mid=1, properties=None)  # fmt: skip
        with caplog.at_level(logging.WARNING, logger="fleet.ingest.pipeline"):
            held = asyncio.create_task(feed(fleet.ingest, message))
            await asyncio.sleep(1.0)
            assert not held.done(), "ingest moved on while the database was down"
            server.start()
            await asyncio.wait_for(held, 30)
        assert "database unavailable" in caplog.text
        assert "database back after" in caplog.text
        assert sorted(b.seq for b in await fleet.rows(ReceivedBatch)) == [1, 2]
        assert await fleet.latest() == {("m", "w"): (2.0, at(T0 + 1))}
        await engine.dispose()


async def test_a_message_waiting_for_a_pooled_connection_is_held_not_dropped(
    fleet_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every connection of the pool is busy (pool timeout): the database is as good as away
    for this message, which is held and stored once a connection is free."""
    engine = await open_database(fleet_db_url)
    async with sessions(engine).begin() as session:
        await register_gateway(session, SITE, GW)
    await engine.dispose()
    small = create_async_engine(
        async_url(fleet_db_url), pool_size=1, max_overflow=0, pool_timeout=0.05
    )
    try:
        fleet = Fleet(Ingest(sessions(small)), sessions(small))
        message = aiomqtt.Message(topic(wire.Kind.TELEMETRY), telemetry(1, ("m", "w", 1.0, T0)),
                                  qos=1, retain=False, mid=1, properties=None)  # fmt: skip
        with caplog.at_level(logging.WARNING, logger="fleet.ingest.pipeline"):
            async with small.connect():  # the pool's only connection
                held = asyncio.create_task(feed(fleet.ingest, message))
                await asyncio.sleep(0.5)
                assert not held.done(), "ingest dropped the message while the pool was busy"
            await asyncio.wait_for(held, 30)
        assert "holding messages" in caplog.text
        assert [b.seq for b in await fleet.rows(ReceivedBatch)] == [1]
        assert fleet.ingest.stats()["accepted"] == {"telemetry": 1}
    finally:
        await small.dispose()

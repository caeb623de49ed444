"""Ingest is correct under any interleaving: a gateway's telemetry and event batches (with
gaps, a restarted numbering, alarms raised, updated and cleared), shuffled, split across two
writers (two engines, two Ingests, their transactions concurrent: genuinely so on
PostgreSQL) and delivered more than once, leave the database as one writer fed them in
order, once each: samples, latest values, devices' last readings, alarms, open gaps and the
received batches. On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from fleet.core.db import create_engine, open_database, sessions
from fleet.ingest.ingest import Ingest
from fleet.models import Alarm, Device, Gap, Gateway, LatestValue, ReceivedBatch, Sample
from fleet.registry import register_gateway
from gateway import wire

pytestmark = pytest.mark.fleet

SITE = "mesh"
T0 = 1_700_000_000.0
DEVICES = ("meter", "door")
POINTS = ("w", "v", "open")
KEYS = ("fire", "door-forced")

# -- a gateway's stream --------------------------------------------------------------------------


@dataclass
class Epoch:
    """One numbering of the gateway's batches (a new outbox starts the next one)."""

    #: (sent at, payload) of each batch, in the order of their numbers
    telemetry: list[tuple[float, bytes]] = field(default_factory=list)
    events: list[tuple[float, bytes]] = field(default_factory=list)


@dataclass
class Stream:
    epochs: list[Epoch]
    #: per epoch: which batches are never delivered (gaps), by (kind, index)
    dropped: list[set[tuple[str, int]]]


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    """Readings with distinct times (a reading is its point and time), events in time order
    from a journal of two alarm keys; one or two epochs."""
    clock = itertools.count(1)
    epochs, dropped = [], []
    open_keys: Counter[str] = Counter()
    for _ in range(draw(st.integers(1, 2))):
        epoch = Epoch()
        event_ids = itertools.count(1)
        for seq in range(1, draw(st.integers(1, 6)) + 1):
            at = T0 + next(clock)
            readings = [
                wire.Reading(
                    d=d,
                    p=p,
                    v=draw(
                        st.one_of(
                            st.integers(-5, 5), st.floats(0, 9, width=32), st.booleans(), st.none()
                        )
                    ),
                    q=draw(st.sampled_from(["good", "stale"])),
                    t=at - 0.5 + i / 100,
                )
                for i, (d, p) in enumerate(
                    draw(
                        st.lists(
                            st.sampled_from([(d, p) for d in DEVICES for p in POINTS]),
                            min_size=1,
                            max_size=4,
                            unique=True,
                        )
                    )
                )
            ]
            epoch.telemetry.append(
                (at, wire.encode(wire.TelemetryBatch(seq=seq, at=at, readings=readings)))
            )
        for seq in range(1, draw(st.integers(0, 5)) + 1):
            events = []
            for _ in range(draw(st.integers(1, 3))):
                key = draw(st.sampled_from(KEYS))
                choices = ["raised"] + (["updated", "cleared"] if open_keys[key] else [])
                kind = draw(st.sampled_from(choices))
                open_keys[key] = 0 if kind == "cleared" else open_keys[key] + (kind == "raised")
                events.append(
                    wire.Event(
                        id=next(event_ids),
                        kind=kind,  # type: ignore[arg-type]
                        key=key,
                        severity="major",
                        interlock="I1",
                        device="door",
                        message=f"{key} {kind} {draw(st.integers(0, 3))}",
                        values={"n": draw(st.integers(0, 3))},
                        at=T0 + next(clock),
                        by="panel" if kind == "cleared" else None,
                        count=draw(st.integers(1, 3)),
                    )
                )
            at = T0 + next(clock)
            epoch.events.append((at, wire.encode(wire.EventBatch(seq=seq, at=at, events=events))))
        droppable = [  # never a first batch: a new outbox's first one tells the restart
            (kind, i)
            for kind, batches in (("telemetry", epoch.telemetry), ("events", epoch.events))
            for i in range(1, len(batches))
        ]
        dropped.append(
            set(draw(st.lists(st.sampled_from(droppable), unique=True, max_size=2)))
            if droppable
            else set()
        )
        epochs.append(epoch)
    return Stream(epochs, dropped)


Delivery = tuple[wire.Kind, bytes]


@st.composite
def deliveries(
    draw: st.DrawFn, stream: Stream
) -> list[list[tuple[list[Delivery], list[Delivery]]]]:
    """Per epoch, phases of (writer A's, writer B's) deliveries, each list in the order that
    writer gets them: every batch that is not dropped once or twice, shuffled, split. A
    restarted numbering's first batches come first (alone in their phase): that is how a
    batch is told to belong to the new numbering and not to the old one."""
    plan = []
    for number, (epoch, dropped) in enumerate(zip(stream.epochs, stream.dropped, strict=True)):
        kinds = ((wire.Kind.TELEMETRY, epoch.telemetry), (wire.Kind.EVENTS, epoch.events))
        first: list[Delivery] = []
        rest: list[Delivery] = []
        for kind, batches in kinds:
            for i, (_, batch) in enumerate(batches):
                if (kind.value, i) in dropped:
                    continue
                (first if number > 0 and i == 0 else rest).extend(
                    [(kind, batch)] * draw(st.integers(1, 2))
                )
        phases = []
        for group in (first, rest):
            shuffled = draw(st.permutations(group))
            to_a = draw(st.lists(st.booleans(), min_size=len(group), max_size=len(group)))
            phases.append(
                (
                    [d for d, a in zip(shuffled, to_a, strict=True) if a],
                    [d for d, a in zip(shuffled, to_a, strict=True) if not a],
                )
            )
        plan.append(phases)
    return plan


# -- writers and what they leave -----------------------------------------------------------------


async def deliver(ingest: Ingest, gateway: str, messages: list[Delivery], group: int) -> None:
    """Through ``handle_many``, ``group`` messages to a transaction; held while the database
    is busy (SQLite's one writer), as the pipeline holds them."""
    for start in range(0, len(messages), group):
        chunk = [(wire.topic(SITE, gateway, k), p) for k, p in messages[start : start + group]]
        while True:
            try:
                outcomes = await ingest.handle_many(chunk)
                break
            except OperationalError:
                await asyncio.sleep(0.05)
        assert all(o.status in ("stored", "duplicate") for o in outcomes), outcomes


async def snapshot(make: async_sessionmaker[AsyncSession], gateway: str) -> dict[str, Any]:
    async with make() as s:
        gateway_id = await s.scalar(select(Gateway.id).where(Gateway.name == gateway))
        devices = await s.execute(
            select(Device.id, Device.name).where(Device.gateway_id == gateway_id)
        )
        names = dict(devices.all())
        samples = await s.execute(
            select(
                Sample.device_id, Sample.point, Sample.at, Sample.value, Sample.num, Sample.quality
            ).where(Sample.device_id.in_(names))
        )
        latest = await s.execute(
            select(
                LatestValue.device_id,
                LatestValue.point,
                LatestValue.value,
                LatestValue.quality,
                LatestValue.at,
            ).where(LatestValue.device_id.in_(names))
        )
        alarms = await s.scalars(select(Alarm).where(Alarm.gateway_id == gateway_id))
        gaps = await s.scalars(
            select(Gap).where(Gap.gateway_id == gateway_id, Gap.closed_at.is_(None))
        )
        batches = await s.scalars(
            select(ReceivedBatch).where(ReceivedBatch.gateway_id == gateway_id)
        )
        seen = await s.execute(
            select(Device.name, Device.last_seen).where(Device.gateway_id == gateway_id)
        )
        return {
            "samples": Counter((names[d], p, at, repr(v), n, q) for d, p, at, v, n, q in samples),
            "latest": {(names[d], p): (v, q, at) for d, p, v, q, at in latest},
            "devices": dict(seen.all()),
            "alarms": sorted(
                (
                    a.key,
                    a.raised_event,
                    a.raised_at,
                    a.severity,
                    a.message,
                    a.values,
                    a.suppressed_by,
                    a.count,
                    a.updated_at,
                    a.cleared_at,
                    a.cleared_by,
                )
                for a in alarms
            ),
            "open_gaps": sorted((g.kind, g.epoch, g.first, g.last) for g in gaps),
            "batches": sorted((b.kind, b.epoch, b.seq, b.sent_at, b.size) for b in batches),
        }


@contextlib.asynccontextmanager
async def writers(url: str) -> AsyncIterator[tuple[AsyncEngine, list[Ingest]]]:
    """The reference writer's engine and two more writers, each with its own engine (its
    own pool of connections), as two fleet workers have."""
    engines = [await open_database(url), create_engine(url), create_engine(url)]
    try:
        yield engines[0], [Ingest(sessions(e)) for e in engines]
    finally:
        for engine in engines:
            await engine.dispose()


def test_any_interleaving_across_two_writers_leaves_what_one_in_order_writer_leaves(
    fleet_db_url: str,
) -> None:
    names = (f"gw-{n}" for n in itertools.count())
    with asyncio.Runner() as runner:
        stack = contextlib.AsyncExitStack()
        engine, (single, a, b) = runner.run(stack.enter_async_context(writers(fleet_db_url)))
        make = sessions(engine)

        @settings(
            max_examples=12,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(st.data())
        def check(data: st.DataObject) -> None:
            stream = data.draw(streams())
            plan = data.draw(deliveries(stream))
            groups = data.draw(st.tuples(st.integers(1, 3), st.integers(1, 3)))
            reference, mixed = next(names), next(names)

            async def run() -> tuple[dict[str, Any], dict[str, Any]]:
                async with make.begin() as session:
                    await register_gateway(session, SITE, reference)
                    await register_gateway(session, SITE, mixed)
                in_order = sorted(
                    (at, kind, batch)
                    for epoch, dropped in zip(stream.epochs, stream.dropped, strict=True)
                    for kind, batches in (
                        (wire.Kind.TELEMETRY, epoch.telemetry),
                        (wire.Kind.EVENTS, epoch.events),
                    )
                    for i, (at, batch) in enumerate(batches)
                    if (kind.value, i) not in dropped
                )
                await deliver(single, reference, [(k, b) for _, k, b in in_order], 1)
                for phases in plan:
                    for to_a, to_b in phases:
                        await asyncio.gather(
                            deliver(a, mixed, to_a, groups[0]), deliver(b, mixed, to_b, groups[1])
                        )
                return await snapshot(make, reference), await snapshot(make, mixed)

            expected, got = runner.run(run())
            assert got == expected

        try:
            check()
        finally:
            runner.run(stack.aclose())

"""What several fleet workers (or one restarted) need of ingest, each seen as a user would:
compact telemetry accepted by a worker that never saw the gateway's point map, a refused
message that does not take the others of its transaction with it, and alarms that follow
their events' own times whatever order the events arrive in."""

from __future__ import annotations

import time
import uuid

from sqlalchemy import select

from fleet.models import Alarm, IngestRejection, ReceivedBatch
from fleet.registry import register_gateway
from gateway import wire
from gateway.wire import compact
from tests.fleet.api_client import fleet_app
from tests.fleet.ingest.test_pipeline import (  # noqa: F401  (the fixture)
    GW,
    SITE,
    Fleet,
    event,
    events,
    fleet,
    telemetry,
    topic,
)
from tests.fleet.ingest.test_pipeline import T0 as PAST


async def test_compact_telemetry_is_stored_after_a_restart_and_by_another_worker(
    fleet_db_url: str,
) -> None:
    point_map = compact.PointMap.of([("meter", f"w-{uuid.uuid4().hex[:6]}"), ("meter", "v")])
    w = point_map.devices[0][1][0]
    now = round(time.time(), 3)

    def batch(seq: int, value: int, *, inline: bool) -> bytes:
        readings: list[compact.Fields] = [("meter", w, value, "good", now + seq)]
        return compact.encode_batch(seq, now + seq, readings, point_map, inline=inline)

    async with fleet_app(fleet_db_url) as first:
        async with first.state.sessions.begin() as session:
            await register_gateway(session, SITE, GW)
        stored = await first.state.ingest.handle(
            topic(wire.Kind.TELEMETRY), batch(1, 10, inline=True)
        )
        assert stored.status == "stored"
        async with fleet_app(fleet_db_url) as second:  # another worker, on the same database
            outcome = await second.state.ingest.handle(
                topic(wire.Kind.TELEMETRY), batch(2, 20, inline=False)
            )
            assert outcome.status == "stored", outcome
    async with fleet_app(fleet_db_url) as restarted:  # the fleet restarted: nothing in memory
        outcome = await restarted.state.ingest.handle(
            topic(wire.Kind.TELEMETRY), batch(3, 30, inline=False)
        )
        assert outcome.status == "stored", outcome
        async with restarted.state.sessions() as session:
            assert await session.scalar(select(IngestRejection.id)) is None
            stored = await session.scalars(select(ReceivedBatch.seq).order_by(ReceivedBatch.seq))
            assert list(stored) == [1, 2, 3]


async def test_a_refused_message_leaves_the_others_of_its_transaction_stored(
    fleet: Fleet,  # noqa: F811
) -> None:
    t = PAST + 0.5
    messages = [
        (topic(wire.Kind.TELEMETRY), telemetry(1, ("meter", "w", 1, t))),
        (topic(wire.Kind.TELEMETRY), telemetry(10**7, ("meter", "w", 2, t + 1))),  # too far
        (topic(wire.Kind.EVENTS), events(1, event(1, "raised"))),
        (topic(wire.Kind.TELEMETRY, "gw-unknown"), telemetry(1, ("meter", "w", 3, t))),
        (topic(wire.Kind.TELEMETRY), telemetry(2, ("meter", "w", 4, t + 2))),
        (topic(wire.Kind.TELEMETRY), b'{"v": 1, "seq": "x"}'),
    ]
    outcomes = await fleet.ingest.handle_many(messages)
    assert [(o.status, o.reason) for o in outcomes] == [
        ("stored", None),
        ("rejected", "sequence"),
        ("stored", None),
        ("rejected", "unknown-gateway"),
        ("stored", None),
        ("rejected", "schema"),
    ]
    assert (await fleet.latest())[("meter", "w")][0] == 4
    assert len(await fleet.rows(Alarm)) == 1
    reasons = sorted(r.reason for r in await fleet.rows(IngestRejection))
    assert reasons == ["schema", "sequence", "unknown-gateway"]


async def test_many_refusals_in_one_list_are_each_refused_alone(fleet: Fleet) -> None:  # noqa: F811
    """Beyond a few refusals the rest go one transaction each: the same outcomes."""
    t = PAST + 0.5
    messages = []
    for seq in range(1, 7):
        messages.append((topic(wire.Kind.TELEMETRY), telemetry(seq, ("meter", "w", seq, t + seq))))
        messages.append(
            (topic(wire.Kind.TELEMETRY), telemetry(10**7 + seq, ("meter", "w", 0, t + seq)))
        )
    outcomes = await fleet.ingest.handle_many(messages)
    assert [o.status for o in outcomes] == ["stored", "rejected"] * 6
    assert (await fleet.latest())[("meter", "w")][0] == 6
    assert await fleet.open_gaps() == []


async def test_a_clear_arriving_before_its_raise_leaves_the_alarm_cleared(
    fleet: Fleet,  # noqa: F811
) -> None:
    cleared = events(2, event(2, "cleared", by="panel"))
    assert await fleet.send(wire.Kind.EVENTS, cleared) == "stored"
    assert await fleet.send(wire.Kind.EVENTS, events(1, event(1, "raised"))) == "stored"
    [alarm] = await fleet.rows(Alarm)
    assert alarm.cleared_by == "panel"
    assert alarm.cleared_at is not None
    assert alarm.cleared_at.timestamp() == PAST + 2


async def test_an_update_older_than_the_one_shown_changes_nothing(fleet: Fleet) -> None:  # noqa: F811
    raised = event(1, "raised")
    newer = event(3, "updated").model_copy(update={"message": "newer", "count": 3})
    older = event(2, "updated").model_copy(update={"message": "older", "count": 2})
    for seq, e in enumerate((raised, newer, older), start=1):
        assert await fleet.send(wire.Kind.EVENTS, events(seq, e)) == "stored"
    [alarm] = await fleet.rows(Alarm)
    assert (alarm.message, alarm.count, alarm.cleared_at) == ("newer", 3, None)
    # the clear between the two updates arrives last: the alarm shows what it was then
    assert await fleet.send(wire.Kind.EVENTS, events(4, event(4, "cleared"))) == "stored"
    [alarm] = await fleet.rows(Alarm)
    assert (alarm.message, alarm.count) == ("newer", 3)
    cleared_early = event(2, "cleared").model_copy(update={"at": PAST + 2.5})
    assert await fleet.send(wire.Kind.EVENTS, events(5, cleared_early)) == "stored"
    [alarm] = await fleet.rows(Alarm)
    assert (alarm.message, alarm.count, alarm.cleared_at.timestamp()) == ("older", 2, PAST + 2.5)

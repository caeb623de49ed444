"""The fleet takes compact telemetry (wire version 2) as it takes version 1: the same rows,
and a batch that comes before its point map is refused with its own reason, nothing stored,
its number left a gap that a resend closes."""

from __future__ import annotations

import time
import uuid

from fleet.models import IngestRejection
from gateway import wire
from gateway.wire import compact
from tests.fleet.ingest.test_pipeline import Fleet, fleet  # noqa: F401  (the fixture)


def point_map() -> compact.PointMap:
    """A map no other test has sent (the fleet's store of maps is the process's)."""
    return compact.PointMap.of(
        [("meter", f"w_{uuid.uuid4().hex[:8]}"), ("meter", "v"), ("sio", "door")]
    )


async def test_compact_batches_are_stored_as_version_1_batches_are(fleet: Fleet) -> None:  # noqa: F811
    pm = point_map()
    w = pm.devices[0][1][0]
    now = round(time.time(), 3)
    first = compact.encode_batch(1, now, [("meter", w, 1200.5, "good", now)], pm, inline=True)
    later = now + 0.5
    readings: list[compact.Fields] = [
        ("meter", "v", 231, "good", later),
        ("sio", "door", True, "bad", later),
    ]
    second = compact.encode_batch(2, now + 1, readings, pm, inline=False)
    assert await fleet.send(wire.Kind.TELEMETRY, first) == "stored"
    assert await fleet.send(wire.Kind.TELEMETRY, second) == "stored"
    assert await fleet.send(wire.Kind.TELEMETRY, second) == "duplicate"
    latest = await fleet.latest()
    assert {key: value for key, (value, _) in latest.items()} == {
        ("meter", w): 1200.5,
        ("meter", "v"): 231,
        ("sio", "door"): True,
    }
    assert await fleet.open_gaps() == []


async def test_a_batch_before_its_map_is_refused_and_a_resend_after_the_map_is_stored(
    fleet: Fleet,  # noqa: F811
) -> None:
    pm = point_map()
    now = round(time.time(), 3)
    early = compact.encode_batch(1, now, [("meter", "v", 230, "good", now)], pm, inline=False)
    outcome = await fleet.ingest.handle(wire.topic("s1", "gw1", wire.Kind.TELEMETRY), early)
    assert (outcome.status, outcome.reason) == ("rejected", "pointmap")
    assert pm.id in outcome.detail
    assert [r.reason for r in await fleet.rows(IngestRejection)] == ["pointmap"]
    assert await fleet.latest() == {}
    with_map = compact.encode_batch(
        2, now + 1, [("sio", "door", False, "good", now)], pm, inline=True
    )
    assert await fleet.send(wire.Kind.TELEMETRY, with_map) == "stored"
    assert await fleet.open_gaps() == [(1, 1)]
    assert await fleet.send(wire.Kind.TELEMETRY, early) == "stored"  # sent again: repaired
    assert await fleet.open_gaps() == []
    assert (await fleet.latest())[("meter", "v")][0] == 230

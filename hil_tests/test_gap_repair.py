"""End-to-end delivery whatever the broker does: the fleet is away for 60 s behind a mosquitto
that keeps at most 100 queued messages per client (it drops the rest after acknowledging them
to the gateway); through gap repair every batch ends up stored once. Then batches dropped
again while the gateway's kept copies are wiped are reported as lost, with their range.

The gateway is the real runtime in its own process (``hil_tests.uplink_runner``: 10 telemetry
batches and 2 alarm events a second), the broker Debian's mosquitto, the fleet its own ingest,
outbound connection and gap repair on a SQLite database.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from fleet.core.broker import BrokerUrl
from fleet.core.db import open_database, sessions
from fleet.core.outbound import Outbound
from fleet.ingest.ingest import Ingest
from fleet.ingest.pipeline import run_ingest
from fleet.ingest.repair import GapRepair, report_route
from fleet.models import Gap, ReceivedBatch
from fleet.registry import register_gateway
from gateway import wire
from hil_tests.broker import Mosquitto
from hil_tests.uplink_helpers import RunnerProcess
from hil_tests.uplink_runner import GATEWAY, SITE

pytestmark = pytest.mark.hil

AWAY_S = 60.0
QUEUE_LIMIT = 100


async def until(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {within} s waiting for {what}"
        await asyncio.sleep(0.2)


def _seqs(db: Path, kind: str) -> list[int]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT seq FROM received_batches WHERE kind = ? AND epoch = 0 ORDER BY seq", (kind,)
        )
        return [int(seq) for (seq,) in rows]


def _last_seq(outbox: Path, kind: str) -> int:
    with sqlite3.connect(outbox) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (f"seq:{kind}",)).fetchone()
        return 0 if row is None else int(row[0])


async def test_what_the_broker_dropped_is_repaired_and_what_is_gone_is_reported_lost(
    tmp_path: Path,
) -> None:
    fleet_db = tmp_path / "fleet.db"
    engine = await open_database(f"sqlite+aiosqlite:///{fleet_db}")
    make = sessions(engine)
    async with make() as session:
        await register_gateway(session, SITE, GATEWAY)
        await session.commit()
    ingest = Ingest(make, routes={wire.Kind.REPAIR_REPORT: report_route})
    outbox = tmp_path / "state" / "outbox.sqlite"

    try:
        with Mosquitto(tmp_path / "mosquitto", max_queued=QUEUE_LIMIT) as mq:
            broker = BrokerUrl.parse(f"mqtt://127.0.0.1:{mq.port}")
            runner = RunnerProcess(
                f"mqtt://127.0.0.1:{mq.port}", tmp_path / "state", tmp_path / "log"
            )
            outbound = Outbound(broker, client_id="fleet-out")
            repair = GapRepair(make, lambda: outbound, every_s=1.0, again_s=5.0)
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(outbound.run()),
                    group.create_task(repair.run()),
                ]

                async def fleet_up() -> asyncio.Task[None]:
                    ready = asyncio.Event()
                    task = group.create_task(
                        run_ingest(ingest, broker, client_id="fleet", ready=ready)
                    )
                    await asyncio.wait_for(ready.wait(), 10)
                    return task

                def complete(kind: str) -> bool:
                    return _seqs(fleet_db, kind) == list(range(1, _last_seq(outbox, kind) + 1))

                try:
                    ingesting = await fleet_up()
                    runner.start()
                    await until(lambda: len(_seqs(fleet_db, "events")) >= 2, 30, "the first events")

                    ingesting.cancel()  # the fleet goes away; the broker queues, then drops
                    await asyncio.sleep(AWAY_S)
                    sent_meanwhile = _last_seq(outbox, "telemetry") - len(
                        _seqs(fleet_db, "telemetry")
                    )
                    assert sent_meanwhile > 2 * QUEUE_LIMIT, "the broker had nothing to drop"
                    ingesting = await fleet_up()
                    await until(lambda: complete("telemetry") and complete("events"), 60, "repair")
                    assert ingest.stats()["gaps_opened"] >= 1, "nothing was dropped: no repair"

                    # Again, but the gateway's kept copies are wiped: what the broker drops is lost.
                    ingesting.cancel()
                    # wait until the broker must have dropped telemetry (more than its queue holds
                    # was sent since), whatever the machine's speed, then wipe the kept copies
                    away_from = _last_seq(outbox, "telemetry")
                    await until(
                        lambda: _last_seq(outbox, "telemetry") > away_from + QUEUE_LIMIT + 30,
                        90,
                        "the broker's queue to overflow",
                    )
                    with sqlite3.connect(outbox, timeout=10) as conn:
                        conn.execute("DELETE FROM sent")
                        wiped_up_to = _last_seq(outbox, "telemetry")
                    await asyncio.sleep(5)
                    ingesting = await fleet_up()

                    async def lost() -> list[Gap]:
                        async with make() as session:
                            rows = await session.scalars(
                                select(Gap).where(Gap.lost_at.is_not(None))
                            )
                            return list(rows)

                    found: list[Gap] = []
                    for _ in range(120):  # 60 s
                        found = await lost()
                        if found:
                            break
                        await asyncio.sleep(0.5)
                    if not found:
                        async with make() as session:
                            gaps = (await session.scalars(select(Gap))).all()
                        shown = [(g.kind, g.first, g.last, g.closed_at, g.asked_at) for g in gaps]
                        stats = ingest.stats()
                        raise AssertionError(
                            f"no gap was reported lost; wiped up to {wiped_up_to}; gaps: {shown}; "
                            f"ingest: {stats}"
                        )
                    assert runner.stop() == 0
                finally:
                    runner.stop()
                    for task in (ingesting, *tasks):
                        task.cancel()

        async with make() as session:
            batches = (await session.scalars(select(ReceivedBatch))).all()
            gaps = (await session.scalars(select(Gap))).all()
        for kind in ("telemetry", "events"):
            numbers = [b.seq for b in batches if b.kind == kind]
            assert len(numbers) == len(set(numbers)), f"{kind}: a batch stored twice"
        lost_gaps = [g for g in gaps if g.lost_at is not None]
        for gap in lost_gaps:
            assert gap.closed_at is not None
            assert gap.first <= gap.last <= wiped_up_to, (gap.first, gap.last, wiped_up_to)
    finally:
        await engine.dispose()  # also when a check failed: no connection left open

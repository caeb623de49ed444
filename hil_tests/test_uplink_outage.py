"""A 60 s broker outage with a kill -9 of the gateway in the middle: every telemetry batch and
every alarm event reaches the fleet database exactly once and in order.

The gateway is the real runtime in its own process (``hil_tests.uplink_runner``: a simulated
site polled over Modbus TCP, plus an alarm raised or cleared every 0.5 s through the
gateway's alarm log); the broker is Debian's mosquitto; the fleet side is the fleet's own
ingest (``fleet.ingest.pipeline``) writing to a SQLite fleet database. Takes about 75 s.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from fleet.core.broker import BrokerUrl
from fleet.core.db import open_database, sessions
from fleet.ingest.ingest import Ingest
from fleet.ingest.pipeline import run_ingest
from fleet.models import Alarm, Gap, ReceivedBatch
from fleet.registry import register_gateway
from gateway.control.alarms import read_journal
from hil_tests.broker import Mosquitto
from hil_tests.uplink_helpers import RunnerProcess
from hil_tests.uplink_runner import GATEWAY, SITE

pytestmark = pytest.mark.hil

OUTAGE_S = 60.0
KILL_AFTER_S = 20.0  # into the outage


def outbox_state(path: Path) -> tuple[int, int, int]:
    """(rows waiting, last telemetry seq, last events seq), read beside the running gateway."""
    with sqlite3.connect(path) as db:
        depth = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    return depth, meta.get("seq:telemetry", 0), meta.get("seq:events", 0)


async def until(condition: object, within: float, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {within} s waiting for {what}"
        await asyncio.sleep(0.1)


async def test_outage_and_kill_lose_nothing_and_reorder_nothing(tmp_path: Path) -> None:
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}")
    make_session = sessions(engine)
    async with make_session() as session:
        await register_gateway(session, SITE, GATEWAY)
        await session.commit()
    ingest = Ingest(make_session)
    state = tmp_path / "state"
    outbox = state / "outbox.sqlite"

    def accepted(kind: str) -> int:
        return int(ingest.stats()["accepted"].get(kind, 0))

    with Mosquitto(tmp_path / "mosquitto") as mq:
        broker = BrokerUrl.parse(f"mqtt://127.0.0.1:{mq.port}")
        runner = RunnerProcess(f"mqtt://127.0.0.1:{mq.port}", state, tmp_path / "log")
        ready = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            fleet = group.create_task(run_ingest(ingest, broker, client_id="fleet", ready=ready))
            try:
                await asyncio.wait_for(ready.wait(), 10)
                runner.start()
                await until(lambda: accepted("events") >= 2, 30, "the first alarm events")
                before = (accepted("telemetry"), accepted("events"))

                mq.stop()  # the outage
                down = time.monotonic()
                await asyncio.sleep(KILL_AFTER_S)
                runner.kill()  # kill -9 in the middle of it
                runner.start()
                await asyncio.sleep(OUTAGE_S - (time.monotonic() - down))
                depth, _, _ = outbox_state(outbox)
                assert depth > 100, f"the outbox held only {depth} rows after the outage"
                mq.start()

                await until(lambda: outbox_state(outbox)[0] < 5, 30, "the outbox to drain")
                assert runner.stop() == 0
                depth, last_telemetry, last_events = outbox_state(outbox)
                await until(
                    lambda: (
                        _stored(tmp_path, "telemetry") == last_telemetry
                        and _stored(tmp_path, "events") == last_events
                    ),
                    30,
                    "every batch in the fleet database",
                )
            finally:
                runner.stop()
                fleet.cancel()
    assert depth == 0, "a clean stop leaves nothing behind while the broker is up"
    assert accepted("telemetry") > before[0] + 100
    assert accepted("events") > before[1] + 50

    async with make_session() as session:
        batches = (await session.execute(select(ReceivedBatch))).scalars().all()
        gaps = (await session.execute(select(Gap))).scalars().all()
        alarms = (await session.execute(select(Alarm))).scalars().all()
    for kind, last in (("telemetry", last_telemetry), ("events", last_events)):
        seqs = sorted(b.seq for b in batches if b.kind == kind)
        assert seqs == list(range(1, last + 1)), f"{kind}: batches missing or extra"
    assert gaps == [], f"a batch arrived out of order: {gaps}"
    assert ingest.stats()["gaps_opened"] == 0
    raised = [e.seq for e in read_journal(state / "alarms.jsonl") if e.kind == "raised"]
    assert sorted(a.raised_event for a in alarms) == raised, "each alarm stored once"
    await engine.dispose()


def _stored(tmp_path: Path, kind: str) -> int:
    with sqlite3.connect(tmp_path / "fleet.db") as db:
        row = db.execute("SELECT COUNT(*) FROM received_batches WHERE kind = ?", (kind,))
        return int(row.fetchone()[0])

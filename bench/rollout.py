"""The rollout engine over 1000 gateway records: decisions per second, how soon the next phase
starts after the last report of a phase, and the fleet process's memory.

1000 gateways in 20 sites are registered in a fleet database (SQLite file; ``--postgres`` for
a throw-away PostgreSQL), each reporting State online and an OTA status through the real
ingest (wire payloads, as from the broker). A rollout (canary 10, then 50 %, then the rest)
runs under the real driver loop (``RolloutDriver.run``, its 1 s tick); a stand-in for the
broker connection records when each ``ota/command`` is handed over, and answers every command
with a committed OTA status through ingest, as the gateway would after its restart.

Ingest's ``ota/status`` route is composed as the fleet composes it (it wakes the driver when
a gateway's update ends).

Metrics: ``step_ms`` (one driver step over all 1000, median and max), ``decisions_per_s``
(gateways considered per second of step time), ``phase_gap_s`` (from the moment the last
committed report of a phase is stored to the first command of the next, max over the two
phase changes; target <= 2 s), ``phase_gap_from_arrival_s`` (the same from the moment that
report reached ingest: it adds ingest's queue, long here since every gateway of a phase
answers within the same 50 ms) and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bench.report import write_result
from fleet.accounts.actor import Actor
from fleet.core.db import open_database, sessions
from fleet.ingest.ingest import Ingest
from fleet.models import Role
from fleet.registry import register_gateway
from fleet.releases.commands import status_route
from fleet.releases.tables import OtaCommand, Release
from fleet.rollouts import service
from fleet.rollouts.driver import RolloutDriver, waking
from fleet.rollouts.service import NewRollout, PhaseSpec
from gateway import wire
from gateway.wire.ota import OtaState, OtaStatus, Running
from hil_tests.postgres import PostgresServer

NAME = "rollout"
GATEWAYS = 1000
SITES = 20


class Broker:
    """Stands in for the fleet's outbound connection: records each command's time and has
    the gateway answer it (committed) through ingest, a little later."""

    def __init__(self, ingest: Ingest, version: str) -> None:
        self.ingest = ingest
        self.version = version
        self.sent: list[tuple[float, str]] = []
        #: per gateway: when its committed report reached ingest, and when it was stored
        self.reported: dict[str, tuple[float, float]] = {}
        self.answers: list[asyncio.Task[None]] = []
        self.all_sent = asyncio.Event()

    async def send(
        self, site: str, gateway: str, kind: wire.Kind, payload: bytes, *, retain: bool = False
    ) -> bool:
        self.sent.append((time.monotonic(), f"{site}/{gateway}"))
        if len(self.sent) >= GATEWAYS:
            self.all_sent.set()
        command = wire.decode(wire.MODELS[kind], payload)
        self.answers.append(asyncio.create_task(self._answer(site, gateway, command.id)))  # type: ignore[attr-defined]
        return True

    async def _answer(self, site: str, gateway: str, command: int) -> None:
        await asyncio.sleep(0.05)
        status = OtaStatus(
            command=command,
            release=self.version,
            state=OtaState.COMMITTED,
            running=Running(version=self.version, slot="b"),
            at=time.time(),
        )
        arrived = time.monotonic()
        await self.ingest.handle(
            wire.topic(site, gateway, wire.Kind.OTA_STATUS), wire.encode(status)
        )
        self.reported[f"{site}/{gateway}"] = (arrived, time.monotonic())


async def seed(
    url: str, driver: Callable[[], RolloutDriver | None]
) -> tuple[Ingest, async_sessionmaker[AsyncSession], int]:
    engine = await open_database(url)
    make = sessions(engine)
    async with make.begin() as session:
        for i in range(GATEWAYS):
            await register_gateway(session, f"site-{i % SITES:02d}", f"gw-{i:04d}")
        release = Release(
            version="2.0.0", platform="linux-aarch64", python="3.11", min_version="1.0.0",
            key_id="k1", size=1, sha256=hashlib.sha256(b"2.0.0").hexdigest(), manifest={},
            uploaded_by="bench",
        )  # fmt: skip
        session.add(release)
        await session.flush()
        release_id = release.id
    ingest = Ingest(make, routes={wire.Kind.OTA_STATUS: waking(status_route(lambda: None), driver)})
    now = time.time()
    for i in range(GATEWAYS):
        site, gw = f"site-{i % SITES:02d}", f"gw-{i:04d}"
        state = wire.State(status="online", version="1.0.0", started_at=now, at=now)
        await ingest.handle(wire.topic(site, gw, wire.Kind.STATE), wire.encode(state))
    return ingest, make, release_id


async def run(url: str) -> dict[str, float]:
    drivers: list[RolloutDriver] = []
    ingest, make, release_id = await seed(url, lambda: drivers[0] if drivers else None)
    broker = Broker(ingest, "2.0.0")
    phases = [PhaseSpec(name="canary", count=10), PhaseSpec(name="half", percent=50),
              PhaseSpec(name="rest")]  # fmt: skip
    actor = Actor(user_id=None, user="bench", role=Role.ADMIN, label="bench")
    async with make.begin() as session:
        new = NewRollout(name="bench", release=release_id, tag=None, site=None,
                         gateways=[f"site-{i % SITES:02d}/gw-{i:04d}" for i in range(GATEWAYS)],
                         phases=phases)  # fmt: skip
        await service.create(session, actor, new, "http://fleet.bench")
    driver = RolloutDriver(make, lambda: broker)  # type: ignore[arg-type, return-value]
    drivers.append(driver)
    steps: list[float] = []
    real_step = driver.step

    async def timed_step() -> int:
        started = time.perf_counter()
        sent = await real_step()
        steps.append(time.perf_counter() - started)
        return sent

    driver.step = timed_step  # type: ignore[method-assign]
    task = asyncio.create_task(driver.run())
    try:
        await asyncio.wait_for(broker.all_sent.wait(), 600)
        await asyncio.gather(*broker.answers)
        await asyncio.sleep(2.5)  # the last phase's end
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    async with make() as session:
        commands = len(list(await session.scalars(select(OtaCommand.id))))
    times = [t for t, _ in broker.sent]
    gaps = _phase_gaps(broker, 1)
    from_arrival = _phase_gaps(broker, 0)
    return {
        "gateways": float(GATEWAYS),
        "commands": float(commands),
        "step_ms_median": statistics.median(steps) * 1000,
        "step_ms_max": max(steps) * 1000,
        "decisions_per_s": GATEWAYS / statistics.median(steps),
        "phase_gap_s_max": max(gaps) if gaps else float("nan"),
        "phase_gap_from_arrival_s_max": max(from_arrival) if from_arrival else float("nan"),
        "total_s": times[-1] - times[0] if times else float("nan"),
        "rss_mib_peak": psutil.Process().memory_info().rss / 2**20,
    }


def _phase_gaps(broker: Broker, which: int) -> list[float]:
    """For each phase change: from the last committed report of the phases so far (``which``
    0: when it reached ingest, 1: when it was stored) to the first command after it. A
    phase's commands go out together, after the step that saw its last report."""
    gaps = []
    sent = [(t, g) for t, g in broker.sent]
    bursts = [0] + [i for i in range(1, len(sent)) if sent[i][0] - sent[i - 1][0] > 0.2]
    for start in bursts[1:]:
        before = [broker.reported[g][which] for _, g in sent[:start] if g in broker.reported]
        gaps.append(sent[start][0] - max(before))
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", action="store_true", help="on a throw-away PostgreSQL")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    if args.postgres:
        with PostgresServer() as pg:
            metrics = asyncio.run(run(pg.fresh_database()))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            metrics = asyncio.run(run(f"sqlite:///{Path(tmp) / 'fleet.db'}"))
    metrics["load_1min_before"] = load
    write_result(
        NAME,
        metrics,
        targets={"phase_gap_s_max": "<= 2"},
        units={
            "step_ms_median": "ms", "step_ms_max": "ms", "decisions_per_s": "gateways/s",
            "phase_gap_s_max": "s", "phase_gap_from_arrival_s_max": "s", "total_s": "s",
            "rss_mib_peak": "MiB",
            "load_1min_before": "load average",
        },
    )  # fmt: skip


if __name__ == "__main__":
    main()

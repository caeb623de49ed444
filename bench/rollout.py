"""The rollout engine over 1000 gateway records: decisions per second, how soon the next phase
starts after the last report of a phase, and the fleet process's memory.

1000 gateways in 20 sites are registered in a fleet database (SQLite file; ``--postgres`` for
a throw-away PostgreSQL), each reporting State online and an OTA status through the real
ingest (wire payloads, as from the broker). A rollout (canary 10, then 50 %, then the rest)
runs under the real driver loop (``RolloutDriver.run``, its 1 s tick); a stand-in for the
broker connection records when each ``ota/command`` is handed over, and answers every command
with a committed OTA status through ingest, as the gateway would after its restart.

Metrics: ``step_ms`` (one driver step over all 1000, median and max), ``decisions_per_s``
(gateways considered per second of step time), ``phase_gap_s`` (from the last committed report
of a phase to the first command of the next, max over the two phase changes; target <= 2 s,
of which up to one tick is the driver's own wait) and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import os
import statistics
import tempfile
import time
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
from fleet.rollouts.driver import RolloutDriver
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
        await self.ingest.handle(
            wire.topic(site, gateway, wire.Kind.OTA_STATUS), wire.encode(status)
        )


async def seed(url: str) -> tuple[Ingest, async_sessionmaker[AsyncSession], int]:
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
    ingest = Ingest(make, routes={wire.Kind.OTA_STATUS: status_route(lambda: None)})
    now = time.time()
    for i in range(GATEWAYS):
        site, gw = f"site-{i % SITES:02d}", f"gw-{i:04d}"
        state = wire.State(status="online", version="1.0.0", started_at=now, at=now)
        await ingest.handle(wire.topic(site, gw, wire.Kind.STATE), wire.encode(state))
    return ingest, make, release_id


async def run(url: str) -> dict[str, float]:
    ingest, make, release_id = await seed(url)
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
    gaps = _phase_gaps(times)
    return {
        "gateways": float(GATEWAYS),
        "commands": float(commands),
        "step_ms_median": statistics.median(steps) * 1000,
        "step_ms_max": max(steps) * 1000,
        "decisions_per_s": GATEWAYS / statistics.median(steps),
        "phase_gap_s_max": max(gaps) if gaps else float("nan"),
        "total_s": times[-1] - times[0] if times else float("nan"),
        "rss_mib_peak": psutil.Process().memory_info().rss / 2**20,
    }


def _phase_gaps(times: list[float]) -> list[float]:
    """Gaps between bursts of commands (a phase's commands go out together): the two
    largest silences, each the time from the previous phase's last commit to the next's
    first command plus the answer delay of the stand-in gateway (0.05 s)."""
    silences = sorted((b - a for a, b in itertools.pairwise(times)), reverse=True)
    return [s - 0.05 for s in silences[:2]]


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
            "phase_gap_s_max": "s", "total_s": "s", "rss_mib_peak": "MiB",
            "load_1min_before": "load average",
        },
    )  # fmt: skip


if __name__ == "__main__":
    main()

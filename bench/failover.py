"""How fast work moves on when a fleet worker dies (issue 17), on PostgreSQL and mosquitto:

* ``singleton_takeover_s``: a process holding a singleton (as the rollout driver is held) is
  killed with SIGKILL; the time until a worker in this process runs the job (it tries every
  2 s: the kill falls at a random point of that period).
* ``worker_restart_s``: ``fleet serve --workers 2``, one worker killed with SIGKILL; the time
  until its supervisor has it up again in its slot (its line printed: app started, HTTP served).

Each over ``--runs`` runs (min and max), with the load average seen (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import write_result
from fleet.core.db import create_engine, open_database
from fleet.core.singleton import RETRY_S, run_singleton
from hil_tests.broker import HOST, Mosquitto, free_port
from hil_tests.postgres import PostgresServer
from hil_tests.rig.processes import terminate

NAME = "failover"
WORKER_LINE = re.compile(rb"fleet: worker 1 \(pid (\d+)\): MQTT client id")


async def _hold(url: str) -> None:
    async def job() -> None:
        print("leading", flush=True)
        await asyncio.Event().wait()

    await run_singleton(create_engine(url), "bench", job)


def _wait_for(check: object, within: float, what: str) -> None:
    assert callable(check)
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _start_holder(url: str, out: Path) -> subprocess.Popen[bytes]:
    with out.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.failover", "--hold", url], stdout=sink
        )


async def singleton_takeover(url: str, directory: Path) -> float:
    out = directory / "holder.out"
    holder = _start_holder(url, out)
    try:
        await asyncio.to_thread(_wait_for, lambda: b"leading" in out.read_bytes(), 30, "holder")
        ran = asyncio.Event()

        async def job() -> None:
            ran.set()
            await asyncio.Event().wait()

        engine = create_engine(url)
        task = asyncio.create_task(run_singleton(engine, "bench", job))
        await asyncio.sleep(3.0 + random.uniform(0, RETRY_S))  # queued; any phase of its retry
        assert not ran.is_set()
        os.kill(holder.pid, signal.SIGKILL)
        killed = time.monotonic()
        await asyncio.wait_for(ran.wait(), 30)
        took = time.monotonic() - killed
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await engine.dispose()
        return took
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()


def worker_restart(url: str, broker: Mosquitto, directory: Path) -> float:
    out = directory / "fleet.out"
    with out.open("wb") as sink:
        fleet = subprocess.Popen(
            [
                sys.executable, "-m", "fleet.cli", "serve", "--workers", "2", "--db", url,
                "--mqtt", f"mqtt://{HOST}:{broker.port}", "--host", HOST,
                "--port", str(free_port()), "--mqtt-client-id", "bench-failover",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_for(lambda: len(WORKER_LINE.findall(out.read_bytes())) == 1, 90, "worker 1")
        (pid,) = WORKER_LINE.findall(out.read_bytes())
        os.kill(int(pid), signal.SIGKILL)
        killed = time.monotonic()
        _wait_for(lambda: len(WORKER_LINE.findall(out.read_bytes())) == 2, 90, "worker 1 again")
        return time.monotonic() - killed
    finally:
        terminate(fleet, 20)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.failover")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hold", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv if argv is not None else [])
    if args.hold:
        asyncio.run(_hold(args.hold))
        return
    takeovers, restarts, loads = [], [], []
    with (
        tempfile.TemporaryDirectory(prefix="doorstep-failover-") as tmp,
        PostgresServer() as pg,
        Mosquitto(Path(tmp) / "mosquitto") as broker,
    ):
        for run in range(args.runs):
            directory = Path(tmp) / f"run{run}"
            directory.mkdir()
            url = pg.fresh_database()
            asyncio.run(_migrated(url))
            takeovers.append(asyncio.run(singleton_takeover(url, directory)))
            restarts.append(worker_restart(url, broker, directory))
            loads.append(os.getloadavg()[0])
    write_result(
        NAME,
        {
            "singleton_takeover_s_min": min(takeovers),
            "singleton_takeover_s_max": max(takeovers),
            "worker_restart_s_min": min(restarts),
            "worker_restart_s_max": max(restarts),
            "runs": float(args.runs),
            "load_average_1m_min": min(loads),
            "load_average_1m_max": max(loads),
        },
        targets={"singleton_takeover_s_max": "within seconds (retry every 2 s)"},
        units={"singleton_takeover_s_min": "s", "worker_restart_s_min": "s"},
    )


async def _migrated(url: str) -> None:
    engine = await open_database(url)
    await engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1:])

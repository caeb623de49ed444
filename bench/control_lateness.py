"""Control-loop lateness with and without CPU hogs on the machine (issue 12.4).

The example site in the rig's own process at a raised priority (it stands for hardware, which
a busy Pi does not slow down); the gateway runtime in a process of its own, prepared as
``gateway run`` prepares it (:func:`gateway.cli.run.prepare_control_thread`: real-time
priority where the OS allows it, background threads below it). After a warm-up the gateway
measures its control loop over a window: lateness p99 and max, skipped cycles, and the
alarms raised in the window (the load alone must raise none). Runs alternate between a quiet
machine and one with ``--hogs`` busy loops at normal priority, ``--runs`` times each, so a
change of load from elsewhere hits both; the load average seen is reported with the numbers.

    python -m bench.control_lateness [--runs 2] [--seconds 20] [--hogs 2]

Targets under load: p99 <= 10 ms, max <= 50 ms, no skipped cycle, no alarm.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.report import write_result
from gateway.bus.stats import LatencyWindow
from gateway.cli.run import prepare_control_thread
from gateway.control.alarms import AlarmEvent
from gateway.runtime import Gateway
from gateway.site import load_site
from hil_tests.rig.cpu_load import CpuHogs
from hil_tests.site_process import SiteProcess

NAME = "control_lateness"
WARM_UP_S = 5.0
READY_TIMEOUT_S = 60.0


async def _measure(config: Path, state_dir: Path, seconds: float) -> dict[str, object]:
    """In the gateway's process: run the site, then measure the loop over ``seconds``."""
    granted = prepare_control_thread()
    async with Gateway(load_site(config), state_dir=state_dir) as gw:
        await asyncio.sleep(WARM_UP_S)
        loop = gw.supervisor.loop
        loop.lateness = LatencyWindow(size=int(seconds / loop.period_s) + 16)
        loop.max_lateness_s = 0.0
        cycles, skipped = loop.cycles, loop.skipped
        raised: list[AlarmEvent] = []
        gw.alarms.listeners.append(lambda e: raised.append(e) if e.kind == "raised" else None)
        await asyncio.sleep(seconds)
        snap = loop.snapshot()
        return {
            "policy": granted.policy,
            "p99_ms": snap["lateness_p99_ms"],
            "max_ms": snap["lateness_max_ms"],
            "cycles": loop.cycles - cycles,
            "skipped": loop.skipped - skipped,
            "alarms": len(raised),
            "alarm_texts": [f"{e.key}: {e.message}" for e in raised],
            "load": os.getloadavg()[0],
        }


def _gateway(config: Path, state_dir: Path, seconds: float) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.control_lateness", "--gateway", str(config),
         "--state-dir", str(state_dir), "--seconds", str(seconds)],
        capture_output=True, text=True, timeout=seconds + WARM_UP_S + READY_TIMEOUT_S,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"the gateway failed: {out.stderr[-2000:]}")
    result: dict[str, object] = json.loads(out.stdout.splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="runs of each kind")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per run")
    parser.add_argument("--hogs", type=int, default=2, help="busy loops in the loaded runs")
    parser.add_argument("--gateway", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.gateway is not None:
        print(json.dumps(asyncio.run(_measure(args.gateway, args.state_dir, args.seconds))))
        return
    runs: dict[str, list[dict[str, object]]] = {"quiet": [], "load": []}
    with tempfile.TemporaryDirectory(prefix="bench-lateness-") as tmp:
        hogs = CpuHogs()
        with SiteProcess(Path(tmp) / "rig") as site:
            print(site.priority, file=sys.stderr)
            for i in range(args.runs):
                for kind in runs:
                    if kind == "load":
                        hogs.start(args.hogs, args.seconds + WARM_UP_S + READY_TIMEOUT_S)
                    try:
                        state = Path(tmp) / f"state-{kind}-{i}"
                        result = _gateway(site.resolved, state, args.seconds)
                    finally:
                        hogs.stop()
                    print(f"{kind} run {i + 1}: {json.dumps(result)}", file=sys.stderr)
                    runs[kind].append(result)
    metrics: dict[str, float] = {}
    for kind, results in runs.items():
        for field in ("p99_ms", "max_ms", "skipped", "alarms", "load"):
            values = [float(str(r[field])) for r in results]
            metrics[f"{kind}_{field}_min"] = min(values)
            metrics[f"{kind}_{field}_max"] = max(values)
    metrics["realtime"] = float(all(r["policy"] == "rr" for rs in runs.values() for r in rs))
    write_result(
        NAME,
        metrics,
        targets={
            "load_p99_ms_max": "<= 10",
            "load_max_ms_max": "<= 50",
            "load_skipped_max": "== 0",
            "load_alarms_max": "== 0",
            "realtime": "== 1 (the control path got real-time priority)",
        },
        units={"p99_ms": "ms", "max_ms": "ms", "skipped": "cycles", "load": "load average"},
    )


if __name__ == "__main__":
    main()

"""Gateway CPU seconds per 1000 transactions and peak RSS on the example site.

The simulator serves the example community site in a process of its own (as the hardware
would), and ``gateway run --json`` polls it in another for a fixed time, as a user or a
service manager starts it (stdout is not a terminal: the status table is built but not
drawn). Measured from outside the gateway process:

* CPU in a steady window (after start-up, imports and SunSpec discovery) from
  ``/proc/PID/stat``, against the transactions of that window estimated from the final
  per-bus rates; and CPU and transactions of the whole run including start-up;
* peak RSS from the process's own rusage (``wait4``), so no other child counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import IO, Any

from bench.report import write_result
from hil_tests.rig.processes import terminate

NAME = "gateway_load"
EXAMPLE = Path(str(resources.files("gateway.examples").joinpath("community.toml")))
DURATION_S = 20.0
#: the steady window starts this long after the gateway process was started
WARM_UP_S = 4.0
READY_TIMEOUT_S = 20.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def start_simulator(resolved: Path) -> subprocess.Popen[bytes]:
    """The example site in the simulator; ready once it has written ``resolved``."""
    sim = subprocess.Popen(
        [sys.executable, "-m", "hil_tests.rig.site", str(EXAMPLE), "--resolved", str(resolved)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not resolved.exists():
        if sim.poll() is not None:
            raise RuntimeError(f"the simulator exited with {sim.returncode} before it was ready")
        if time.monotonic() > deadline:
            stop(sim)
            raise RuntimeError(f"the simulator was not ready after {READY_TIMEOUT_S:.0f} s")
        time.sleep(0.05)
    return sim


def stop(proc: subprocess.Popen[bytes]) -> None:
    terminate(proc)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process so far (clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLOCK_TICKS


def snapshot_of(stderr: str) -> dict[str, Any]:
    """The final JSON snapshot ``gateway run --json`` prints after any log lines."""
    lines = stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if line == "{"]
    if not starts:
        raise RuntimeError(f"gateway run printed no JSON snapshot:\n{stderr[-2000:]}")
    doc: dict[str, Any] = json.loads("\n".join(lines[starts[-1] :]))
    return doc


def run_gateway(config: Path, stderr: IO[bytes]) -> dict[str, float]:
    """Run ``gateway run`` for DURATION_S; CPU, wall time and peak RSS of its process."""
    command = [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)]
    command += ["--duration", str(DURATION_S), "--json"]
    started = time.monotonic()
    gw = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        time.sleep(WARM_UP_S)
        steady_from = (time.monotonic(), cpu_seconds(gw.pid))
        # its own clock starts after imports and connecting, so it is still running here
        time.sleep(max(0.0, started + DURATION_S - time.monotonic()))
        steady_to = (time.monotonic(), cpu_seconds(gw.pid))
        _, status, usage = os.wait4(gw.pid, 0)  # its rusage alone, not every child's
    except BaseException:
        stop(gw)
        raise
    gw.returncode = os.waitstatus_to_exitcode(status)
    if gw.returncode != 0:
        stderr.seek(0)
        tail = stderr.read().decode(errors="replace")[-2000:]
        raise RuntimeError(f"gateway run exited with {gw.returncode}:\n{tail}")
    return {
        "duration_s": time.monotonic() - started,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "steady_s": steady_to[0] - steady_from[0],
        "steady_cpu_s": steady_to[1] - steady_from[1],
        "peak_rss_mib": usage.ru_maxrss / 1024,
    }


def measure() -> dict[str, float]:
    """Simulator and gateway as two processes; the gateway's load and its final snapshot."""
    with tempfile.TemporaryDirectory(prefix="doorstep-bench-") as tmp:
        resolved = Path(tmp) / "site.toml"
        sim = start_simulator(resolved)
        try:
            with (Path(tmp) / "gateway.err").open("w+b") as err:
                load = run_gateway(resolved, err)
                err.seek(0)
                snapshot = snapshot_of(err.read().decode())
        finally:
            stop(sim)
    return load | bus_totals(snapshot)


def bus_totals(snapshot: dict[str, Any]) -> dict[str, float]:
    buses = snapshot["buses"].values()
    return {
        "transactions": float(sum(b["transactions"] for b in buses)),
        "tx_per_s": float(sum(b["tx_per_s"] for b in buses)),
        "timeouts": float(sum(b["timeouts"] for b in buses)),
    }


def derived(m: dict[str, float]) -> dict[str, float]:
    steady_tx = m["tx_per_s"] * m["steady_s"]
    return {
        "cpu_s_per_1000_tx": 1000 * m["steady_cpu_s"] / steady_tx,
        "cpu_fraction_steady": m["steady_cpu_s"] / m["steady_s"],
        "cpu_s_per_1000_tx_whole_run": 1000 * m["cpu_s"] / m["transactions"],
    }


UNITS = {
    "cpu_s_per_1000_tx": "CPU s",
    "cpu_s_per_1000_tx_whole_run": "CPU s",
    "cpu_fraction_steady": "fraction of one core",
    "cpu_s": "CPU s",
    "steady_cpu_s": "CPU s",
    "steady_s": "s",
    "duration_s": "s",
    "peak_rss_mib": "MiB",
    "transactions": "count",
    "tx_per_s": "1/s",
    "timeouts": "count",
}


def main() -> None:
    metrics = measure()
    write_result(NAME, metrics | derived(metrics), units=UNITS)


if __name__ == "__main__":
    main()

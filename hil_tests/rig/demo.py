"""``make demo``: the example community site in the simulator and a gateway polling it.

The simulator runs as a process of its own (as the hardware would), serving the site's RTU
buses on pseudo-terminals and its TCP devices on loopback ports; the gateway is the real
``gateway run`` with the config the simulator resolved. Needs no hardware, root or services.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

READY_TIMEOUT_S = 20.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=None, help="stop after SECONDS")
    args = parser.parse_args(argv)
    example = Path(str(resources.files("gateway.examples").joinpath("community.toml")))
    with tempfile.TemporaryDirectory(prefix="doorstep-demo-") as tmp:
        resolved = Path(tmp) / "site.toml"
        sim = subprocess.Popen(
            [sys.executable, "-m", "hil_tests.rig.site", str(example), "--resolved", str(resolved)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_ready(sim, resolved)
            print(f"simulated site running (pid {sim.pid}); gateway config: {resolved}")
            command = [sys.executable, "-m", "gateway.cli", "run", "--config", str(resolved)]
            if args.duration:
                command += ["--duration", str(args.duration)]
            return subprocess.call(command)
        except KeyboardInterrupt:
            return 0
        finally:
            sim.send_signal(signal.SIGTERM)
            try:
                sim.wait(timeout=5)
            except subprocess.TimeoutExpired:
                sim.kill()


def _wait_ready(sim: subprocess.Popen[str], resolved: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not resolved.exists():
        if sim.poll() is not None:
            raise SystemExit(f"the simulator exited with {sim.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise SystemExit(f"the simulator was not ready after {READY_TIMEOUT_S:.0f} s")
        time.sleep(0.05)
    os.environ.setdefault("COLUMNS", "160")


if __name__ == "__main__":
    sys.exit(main())

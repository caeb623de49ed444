"""A gateway process for the uplink's HIL tests: the real runtime on a simulated site.

``python -m hil_tests.uplink_runner --broker mqtt://127.0.0.1:PORT --state DIR`` runs the
gateway runtime (``gateway.runtime.Gateway``) with an ``[uplink]`` table against a small
simulated site served in the same process (an elevator and a charger on Modbus TCP, with
traffic and a car, so values keep changing), and raises or clears a synthetic alarm every
``--alarm-every`` seconds through the gateway's own alarm log (journalled, replayed into the
uplink at start), so telemetry and events flow together. Every point is re-reported at least
every ``--max-interval`` seconds. SIGTERM stops it cleanly; ``kill -9`` is the test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from gateway.control.alarms import Severity
from gateway.runtime import Gateway
from gateway.site import parse_site
from hil_tests.rig.site import SimulatedSite, to_toml

SITE, GATEWAY = "hil", "gw-runner"
SITE_TOML = f"""
[gateway]
site = "{SITE}"
id = "{GATEWAY}"

[poll]
safety = 0.2
telemetry = 0.2
slow = 5.0

[[buses]]
name = "lan"
kind = "tcp"
host = "127.0.0.1"
port = 1

[[devices]]
name = "lift-1"
profile = "ELV-24476"
bus = "lan"
unit_id = 1

[[devices]]
name = "charger-1"
profile = "EVSE-HEC"
bus = "lan"
unit_id = 2
"""


def uplink_toml(args: argparse.Namespace) -> str:
    lines = [
        "[uplink]",
        f'broker = "{args.broker}"',
        f"batch_interval_s = {args.batch}",
        f"max_interval_s = {args.max_interval}",
        "health_interval_s = 1.0",
        "reconnect_min_s = 0.1",
        "reconnect_max_s = 0.5",
    ]
    return "\n".join(lines) + "\n"


async def alarms(gw: Gateway, every: float, stop: asyncio.Event) -> None:
    """Raise, then clear, then raise… one alarm, so events flow at a steady pace."""
    n = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        n += 1
        if "runner/hot" in gw.alarms.active:
            gw.alarms.clear("runner/hot", by="runner")
        else:
            gw.alarms.raise_("runner/hot", Severity.MAJOR, "runner", f"hot #{n}", device="lift-1")


async def run(args: argparse.Namespace) -> None:
    config = parse_site(SITE_TOML, "uplink-runner.toml")
    async with SimulatedSite(config, lively=True) as site:
        text = to_toml(site.resolved()) + "\n" + uplink_toml(args)
        resolved = parse_site(text, "uplink-runner-resolved.toml")
        async with Gateway(resolved, state_dir=Path(args.state)) as gw:
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            print("runner ready", flush=True)
            await alarms(gw, args.alarm_every, stop)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--batch", type=float, default=0.1)
    parser.add_argument("--max-interval", type=float, default=1.0)
    parser.add_argument("--alarm-every", type=float, default=0.5)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

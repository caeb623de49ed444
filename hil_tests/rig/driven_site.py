"""The simulated site of ``make demo``, in a process of its own, and driven: the site of
:mod:`hil_tests.rig.site` at a raised priority (it stands for hardware, which a busy Pi does
not slow down), with the control channel that ``python -m hil_tests.rig.scenario`` talks to.

    python -m hil_tests.rig.driven_site CONFIG --resolved OUT.toml --socket DIR/scenario.sock
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from gateway.site import load_site
from hil_tests.rig.control_channel import ControlChannel
from hil_tests.rig.cpu_load import raise_priority
from hil_tests.rig.scenarios import Director
from hil_tests.rig.site import SimulatedSite, to_toml


async def _serve(args: argparse.Namespace, priority: str) -> None:
    async with (
        SimulatedSite(load_site(args.config)) as site,
        Director(site, gateway_state_dir=args.gateway_state_dir, priority=priority) as director,
        ControlChannel(args.socket, director.handle),
    ):
        partial = args.resolved.with_suffix(".partial")
        await asyncio.to_thread(partial.write_text, to_toml(site.resolved()))
        partial.replace(args.resolved)  # atomic: the demo never reads half a config
        print(f"simulated site ready: {args.resolved}; scenarios: {args.socket}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="serve a driven simulated site for a config")
    parser.add_argument("config", type=Path)
    parser.add_argument("--resolved", type=Path, required=True, help="write the config here")
    parser.add_argument("--socket", type=Path, required=True, help="the control channel")
    parser.add_argument(
        "--gateway-state-dir", type=Path, help="the gateway's, for the hints the scenarios give"
    )
    args = parser.parse_args(argv)
    priority = raise_priority()  # before any thread starts: threads inherit it
    print(priority, flush=True)
    asyncio.run(_serve(args, priority))
    return 0


if __name__ == "__main__":
    sys.exit(main())

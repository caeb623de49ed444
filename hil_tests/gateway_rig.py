"""The real gateway on the simulated site, for HIL tests and benchmarks: a site config from a
few lines (:func:`site_config`, :func:`rtu_bus`, :func:`tcp_bus`), run in the simulator with
the real gateway runtime polling it over real ptys and loopback TCP (:func:`running`, which
yields a :class:`Rig`), a point's ground truth from the simulator's registers
(:func:`truth`), and the ``gateway`` command in its own process (:func:`gateway_cli`)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from gateway.bus.breaker import BreakerPolicy
from gateway.devices import codec
from gateway.image import Quality
from gateway.runtime import Gateway
from gateway.site import SiteConfig, parse_site
from hil_tests.rig.registers import SimulatedUnit
from hil_tests.rig.site import SimulatedSite, to_toml


def site_config(buses: str, devices: list[tuple[str, str, str, int]], poll: str = "") -> SiteConfig:
    """``devices`` as (name, profile, bus, unit_id)."""
    text = f'[gateway]\nsite = "hil"\nid = "gw-hil"\n\n[poll]\n{poll}\n\n{buses}\n'
    for name, profile, bus, unit in devices:
        text += (
            f'\n[[devices]]\nname = "{name}"\nprofile = "{profile}"\n'
            f'bus = "{bus}"\nunit_id = {unit}\n'
        )
    return parse_site(text, "hil-site.toml")


def rtu_bus(name: str, baudrate: int) -> str:
    return f'[[buses]]\nname = "{name}"\nkind = "rtu"\nport = "/dev/null"\nbaudrate = {baudrate}\n'


def tcp_bus(name: str) -> str:
    return f'[[buses]]\nname = "{name}"\nkind = "tcp"\nhost = "127.0.0.1"\nport = 1\n'


@dataclass
class Rig:
    site: SimulatedSite
    gw: Gateway

    async def wait_for(
        self, condition: Callable[[], bool], within: float = 10.0, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + within
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {within} s waiting for {what}")
            await asyncio.sleep(0.02)

    def all_good(self, device: str) -> bool:
        poller = self.gw.pollers[device]
        if not poller.ready:
            return False
        return all(s.quality is Quality.GOOD for _, _, s in self.gw.image.points(device))


@asynccontextmanager
async def running(
    config: SiteConfig, *, policy: BreakerPolicy | None = None, state_dir: Path | None = None
) -> AsyncIterator[Rig]:
    async with SimulatedSite(config, lively=False) as site:
        resolved = parse_site(to_toml(site.resolved()), "resolved.toml")
        async with Gateway(resolved, policy=policy, state_dir=state_dir) as gw:
            yield Rig(site, gw)


def truth(unit: SimulatedUnit, name: str) -> codec.Value:
    """A point's value computed from the simulator's own registers: the ground truth."""
    point = unit.point(name)
    sf = None
    if point.scale_factor is not None:
        sf_value = truth(unit, point.scale_factor)
        sf = sf_value if isinstance(sf_value, int) else None
    assert point.address is not None
    return codec.decode(point, unit.regs.get(point.table, point.address, point.width), sf)


async def gateway_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The ``gateway`` command in its own process, without blocking the simulator's loop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(list(args), proc.returncode, out.decode(), err.decode())

"""Desired configuration on the rig: the real gateway runtime on the simulated community site
(real ptys, loopback TCP, the SIO-1 firmware on its host board) applies documents in place,
proves them healthy or rolls them back; and end to end with a real mosquitto, PostgreSQL and
the fleet process.

One simulated site for the in-process cases (module scope); each case starts its gateway on
it and pushes documents to its configuration agent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from gateway.config.agent import ConfigAgent
from gateway.control.safety_io import CLAIMED
from gateway.runtime import Gateway
from gateway.site import load_site, parse_site
from gateway.wire.config import DesiredConfig, ReportedConfig, document_hash
from hil_tests.rig.site import SimulatedSite, to_toml

pytestmark = pytest.mark.hil

EXAMPLE = Path(__file__).parents[1] / "gateway" / "examples" / "community.toml"


def desired(text: str, version: int, *, safety_change: bool = False) -> DesiredConfig:
    return DesiredConfig(
        version=version,
        sha256=document_hash(text),
        document=text,
        safety_change=safety_change,
        at=time.time(),
    )


@asynccontextmanager
async def simulated() -> AsyncIterator[tuple[SimulatedSite, str]]:
    async with SimulatedSite(load_site(EXAMPLE), lively=False) as site:
        text = to_toml(site.resolved())
        assert "health_window_s = 30.0" in text
        yield site, text.replace("health_window_s = 30.0", "health_window_s = 2.0")


async def settled(agent: ConfigAgent, within: float = 30.0) -> ReportedConfig:
    await asyncio.wait_for(agent.idle.wait(), within)
    return agent.report


def without_device(text: str, name: str) -> str:
    """The document with the ``[[devices]]`` table of ``name`` left out."""
    blocks = text.split("\n[[")
    return "\n[[".join(b for b in blocks if not b.startswith(f'devices]]\nname = "{name}"'))


async def test_apply_in_place_keeps_the_loop_on_time_and_the_sio_claimed_and_rolls_back_a_bad_port(
    tmp_path: Path,
) -> None:
    async with simulated() as (_site, base):
        small = without_device(base, "charger-4")
        site_file = tmp_path / "site.toml"
        site_file.write_text(small)
        gw = Gateway(parse_site(small, str(site_file)), state_dir=tmp_path / "state")
        agent = ConfigAgent(gw, site_file, small, tmp_path / "state")
        async with gw, agent:
            await wait_until(
                lambda: gw.image.reading("sio", "state") == CLAIMED, 20, "the SIO-1 claim"
            )
            assert "charger-4" not in gw.pollers
            skipped = gw.supervisor.loop.skipped

            # an export-limit change and a charger added, in one version
            bigger = base.replace("limit_w = 5000", "limit_w = 3000")
            assert bigger != base
            carport = gw.schedulers["carport"]
            sio_poller = gw.pollers["sio"]
            agent.offer(desired(bigger, 1))
            report = await settled(agent)
            assert report.status == "applied", report
            assert report.version == 1
            assert report.sha256 == document_hash(bigger)
            assert gw.schedulers["carport"] is carport  # the bus stayed open, its scheduler too
            assert gw.pollers["sio"] is sio_poller
            assert gw.pollers["charger-4"].stats.transactions > 0  # the new charger is polled
            assert gw.supervisor.loop.skipped == skipped  # no skipped control cycle
            assert gw.supervisor.safety_ios[0].claimed
            assert gw.image.reading("sio", "state") == CLAIMED
            assert site_file.read_text() == bigger  # committed: the gateway's own now
            assert (tmp_path / "state" / "config" / "previous.toml").read_text() == small

            # a bus pointed at a port that does not exist: rolled back, with the reason
            bad = bigger.replace(
                f'port = "{gw.site.bus("carport").port}"', 'port = "/dev/ttyDOESNOTEXIST"'
            )
            assert bad != bigger
            agent.offer(desired(bad, 2))
            report = await settled(agent)
            assert report.status == "rolled back", report
            assert "/dev/ttyDOESNOTEXIST" in report.reason
            assert report.version == 1
            assert report.about == 2
            await wait_until(
                lambda: gw.pollers["charger-4"].stats.transactions > 0, 10, "the carport again"
            )
            assert gw.supervisor.safety_ios[0].claimed
            assert site_file.read_text() == bigger

            # a typo the fleet would refuse is refused here too, naming the key
            agent.offer(desired(bigger.replace("limit_w = 3000", "limit_ww = 3000"), 3))
            report = await settled(agent)
            assert report.status == "rejected"
            assert any("limit_ww" in m for m in report.messages), report.messages


async def wait_until(condition: object, within: float, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.05)

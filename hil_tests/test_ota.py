"""Over-the-air updates with real parts: a real mosquitto, the real fleet serving bundles
over HTTP, and the real gateway started by the launcher under a supervisor that restarts it
whenever it exits (as systemd's Restart= does). Bundles are built from this repository with
a bumped version; the slots share this environment's dependencies
(``--ota-system-site-packages``), so a bundle carries only the gateway's wheel and firmware.

One scenario, in order, on one gateway: a downgrade and a release signed by a key the gateway
does not trust are refused, each with its reason, and nothing changes; release
0.2.0, whose download dies at 80 % and resumes from there, installs, is killed with SIGKILL
just before its planned exit (the switch done, the SIO-1 asked to hold its outputs; the test
seam of gateway/ota/pause.py stops it there), is killed again in its health window, is
started again on trial, proves itself and commits, and the gateway reports 0.2.0 from slot
a; release 0.3.0, killed while its slot is built and built again at the next start, crashes
at start and is left by the launcher after three starts; the gateway, back on 0.2.0, says
why.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fleet.core.broker import BrokerUrl
from fleet.core.outbound import Outbound
from fleet.core.settings import Settings
from fleet.releases.commands import command_release, gateway_of
from fleet.releases.store import BundleStore, add_release, find_release, releases_dir
from gateway import wire
from gateway.ota.pause import ENV
from gateway.trust import SigningKey
from hil_tests.broker import Mosquitto
from hil_tests.fleet_server import FleetServer
from hil_tests.gateway_rig import rtu_bus, site_config, tcp_bus
from hil_tests.ota_release import CuttingProxy, Supervisor, release
from hil_tests.rig.site import SimulatedSite, to_toml
from hil_tests.uplink_helpers import Recorder, recording

pytestmark = pytest.mark.hil

SITE, GATEWAY = "hil", "gw-hil"
CRASH = 'raise SystemExit("release 0.3.0 cannot start")\n'


def statuses(recorder: Recorder) -> list[dict[str, Any]]:
    return [m.body for m in recorder.messages if m.kind == "ota/status"]


async def until(check: Callable[[], bool], within: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            tail = await asyncio.to_thread(_tail, log)
            raise AssertionError(f"not within {within} s: {what}\n--- gateway log ---\n{tail}")
        await asyncio.sleep(0.1)


def _tail(log: Path) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    lines = [line for line in text.splitlines() if "ota" in line or "Error" in line]
    return "\n".join(lines[-40:])


def latest(recorder: Recorder, **match: Any) -> Callable[[], bool]:
    def check() -> bool:
        return any(all(s.get(k) == v for k, v in match.items()) for s in statuses(recorder))

    return check


async def test_updates_commit_refuse_and_roll_back_under_a_supervisor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOORSTEP_FLEET_DIR", str(tmp_path / "fleet-data"))
    key = SigningKey.generate()
    bundles = {
        "0.0.9": release(tmp_path / "r", "0.0.9", key),
        "0.2.5": release(tmp_path / "r", "0.2.5", SigningKey.generate()),  # a key not trusted
        "0.2.0": release(tmp_path / "r", "0.2.0", key),
        "0.3.0": release(tmp_path / "r", "0.3.0", key, {"gateway/cli/run.py": CRASH}),
    }
    state = tmp_path / "state"
    (state / "trusted-keys").mkdir(parents=True)
    (state / "trusted-keys" / "ops.pub").write_bytes(key.public_pem())
    log = tmp_path / "gateway.log"
    site_cfg = site_config(
        rtu_bus("usb", 115200) + tcp_bus("meter"),
        [("sio", "SIO-1", "usb", 1), ("meter", "SUNSPEC-METER", "meter", 1)],
    )
    with Mosquitto(tmp_path / "mq") as mq, FleetServer(tmp_path / "fleet") as fleet:
        fleet.register(SITE, GATEWAY)
        store = BundleStore(releases_dir(Settings(database_url=fleet.database_url)))

        async def upload(path: Path) -> None:
            async with fleet.app.state.sessions() as session:
                await add_release(session, store.receive_file(path), "test")
                await session.commit()

        async def command(version: str, base: str) -> bytes:
            async with fleet.app.state.sessions() as session:
                gw = await gateway_of(session, SITE, GATEWAY)
                rel = await find_release(session, version, None)
                sent = await command_release(session, "test", gw, rel, base)
                await session.commit()
                return sent.payload

        for path in bundles.values():
            fleet.run(upload(path))
        async with SimulatedSite(site_cfg, lively=False) as site:
            config = tmp_path / "site.toml"
            uplink = f'\n[uplink]\nbroker = "mqtt://127.0.0.1:{mq.port}"\nbatch_interval_s = 0.2\n'
            config.write_text(to_toml(site.resolved()) + uplink)
            outbound = Outbound(BrokerUrl("127.0.0.1", mq.port), client_id="fleet-out")
            pause = tmp_path / "pause"
            pause.write_text("restarting\n")  # the first update's last step before its exit
            supervisor = Supervisor(state, config, log, env={ENV: str(pause)})
            async with recording(mq.port) as rec, outbound.running(), supervisor.running():
                await asyncio.wait_for(outbound.connected.wait(), 10)

                async def send(version: str, base: str = fleet.url) -> None:
                    payload = fleet.run(command(version, base))
                    assert await outbound.send(
                        SITE, GATEWAY, wire.Kind.OTA_COMMAND, payload, retain=True
                    )

                await until(latest(rec, state="idle"), 60, "the gateway's first status", log)
                assert statuses(rec)[-1]["running"]["slot"] == "none"

                await send("0.0.9")  # older than the running 0.1.0
                await until(latest(rec, state="failed"), 60, "the downgrade refused", log)
                refused = statuses(rec)[-1]
                assert refused["reason"].startswith("bundle refused (downgrade)")
                await send("0.2.5")  # the fleet took it; the gateway does not trust its key
                await until(latest(rec, state="failed", release="0.2.5"), 60, "0.2.5", log)
                refused = statuses(rec)[-1]
                assert refused["reason"].startswith("bundle refused (unknown-key)")
                assert key.key_id in refused["reason"], "it names the key it trusts"
                assert not (state / "ota" / "slots" / "a").exists(), "nothing installed"
                assert statuses(rec)[-1]["running"] == {
                    "version": "0.1.0", "slot": "none", "firmware": "1.1",
                }  # fmt: skip

                board = site.boards["sio"]
                await until(lambda: board.outputs == 0b0011, 30, "SIO-1 claimed, relays on", log)
                trips, seen_states = board.handle.failsafe_trips, set()

                async def watch_board() -> None:
                    while True:
                        seen_states.add((board.state_name, board.outputs))
                        await asyncio.sleep(0.01)

                watcher = asyncio.create_task(watch_board())
                size = bundles["0.2.0"].stat().st_size
                async with CuttingProxy(fleet.port, cut=size * 8 // 10).running() as proxy:
                    await send("0.2.0", proxy.url)  # the link dies at 80 % of the download
                    await until(
                        latest(rec, state="verifying", release="0.2.0"), 60, "0.2.0 downloaded", log
                    )
                assert len(proxy.ranges) == 2, proxy.ranges
                assert proxy.ranges[0] is None
                resumed = int(proxy.ranges[1].removeprefix("bytes=").rstrip("-"))
                assert size * 7 // 10 < resumed < size * 8 // 10  # 80 % less the HTTP head
                assert f"({size} bytes over the network)" in log.read_text(), "fetched twice"
                reached = tmp_path / "pause.reached"
                await until(reached.is_file, 180, "0.2.0 about to restart", log)
                supervisor.kill()  # kill -9 instead of the planned exit: the hold is written
                await until(latest(rec, state="checking"), 180, "0.2.0 started", log)
                await until(lambda: board.outputs == 0b0011, 10, "SIO-1 kept by 0.2.0", log)
                watcher.cancel()
                # the planned restart: the board held its outputs; feeder and PV never dropped
                assert seen_states == {("CLAIMED", 0b0011)}, seen_states
                assert board.handle.failsafe_trips == trips
                supervisor.kill()  # kill -9 in the health window: checked again, then committed
                await until(latest(rec, state="committed", release="0.2.0"), 180, "0.2.0", log)
                done = statuses(rec)[-1]
                assert done["running"] == {"version": "0.2.0", "slot": "a", "firmware": "1.1"}
                seen = [s["state"] for s in statuses(rec) if s["release"] == "0.2.0"]
                for step in ("downloading", "verifying", "installing", "restarting", "checking"):
                    assert step in seen, (step, seen)
                assert supervisor.starts == 3  # the kill at the restart and the one in the window

                await send("0.3.0")
                await until(latest(rec, state="installing", release="0.3.0"), 60, "0.3.0", log)
                supervisor.kill()  # kill -9 while the slot is built: the next start redoes it
                await until(latest(rec, state="rolled-back"), 240, "0.3.0 rolled back", log)
                back = statuses(rec)[-1]
                assert back["running"]["version"] == "0.2.0"
                assert back["running"]["slot"] == "a"
                assert "release 0.3.0 did not start healthy 3 times in a row" in back["reason"]
                # the kill, the planned restart, three failed starts, then slot a again
                assert supervisor.starts >= 3 + 1 + 4

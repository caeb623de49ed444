"""An update that carries a newer SIO-1 firmware, with ``kill -9`` of the gateway at every step.

Real parts: mosquitto, the fleet serving the bundle over HTTP, the gateway started by the
launcher under a supervisor that restarts it whenever it exits, and a simulated MicroPython
board on two ptys (``hil_tests/rig/micropython_board.py``): its REPL, driven by the real
mpremote through ``gateway.flash``, and its Modbus data channel, on which the SIO-1 firmware
(run on CPython) answers the version its flash holds. The gateway polls and claims the board
on that data channel.

One update, release 0.2.0 carrying firmware 1.2 for a board on 1.1. The agent is stopped at
each step by its test seam (``DOORSTEP_OTA_TEST_PAUSE``, gateway/ota/pause.py) and the
gateway's whole process group is killed there with SIGKILL: downloading, verifying, installing,
flashing (and again as soon as the copy has stopped the board's firmware: the board is left
in maintenance, relays off, and the next start finishes the copy at once), switching (the
state file says the new slot, the link not yet), the health window and the commit. Each
start after a kill finishes the step or goes on from it; the update ends committed, the
board holds and answers 1.2, the gateway reports it, and the board was never seen with an
output on while not CLAIMED by a running firmware.
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
from gateway.bus.config import RtuBus
from gateway.flash.firmware import DEFAULT_FIRMWARE, load_firmware
from gateway.ota.pause import ENV
from gateway.trust import SigningKey
from hil_tests.broker import Mosquitto
from hil_tests.fleet_server import FleetServer
from hil_tests.gateway_rig import rtu_bus, site_config
from hil_tests.ota_release import Supervisor, bumped_firmware, release
from hil_tests.rig.micropython_board import MicroPythonBoard
from hil_tests.rig.site import to_toml
from hil_tests.uplink_helpers import Recorder, recording

pytestmark = pytest.mark.hil

SITE, GATEWAY, UNIT = "hil", "gw-hil", 7
#: where the agent is stopped and killed, in the order it reaches them
KILLS = ("downloading", "verifying", "installing", "flashing", "switching", "checking",
         "committing")  # fmt: skip


def statuses(recorder: Recorder) -> list[dict[str, Any]]:
    return recorder.of("ota/status")


async def until(check: Callable[[], bool], within: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            text = await asyncio.to_thread(log.read_text, errors="replace")
            lines = [x for x in text.splitlines() if "ota" in x or "Error" in x]
            tail = "\n".join(lines[-50:])
            raise AssertionError(f"not within {within} s: {what}\n--- gateway log ---\n{tail}")
        await asyncio.sleep(0.05)


def provisioned_board(flash: Path) -> MicroPythonBoard:
    """A board with this repository's firmware (1.1) and its identity, as `gateway flash`
    leaves it, running."""
    firmware = load_firmware(DEFAULT_FIRMWARE)
    flash.mkdir(parents=True)
    for name, data in firmware.build().items():
        (flash / name).write_bytes(data)
    identity = firmware.identity_file(SITE, GATEWAY, UNIT, "token")
    (flash / firmware.identity_name).write_bytes(identity)
    return MicroPythonBoard(flash, data_line=True).start()


async def test_a_newer_sio1_firmware_installs_through_kill_9_at_every_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOORSTEP_FLEET_DIR", str(tmp_path / "fleet-data"))
    key = SigningKey.generate()
    firmware_dir = bumped_firmware(tmp_path / "firmware-1.2")
    bundle = release(tmp_path / "r", "0.2.0", key, firmware=firmware_dir)
    state = tmp_path / "state"
    (state / "trusted-keys").mkdir(parents=True)
    (state / "trusted-keys" / "ops.pub").write_bytes(key.public_pem())
    log = tmp_path / "gateway.log"
    pause = tmp_path / "pause"
    pause.write_text("".join(f"{step}\n" for step in KILLS))
    reached = tmp_path / "pause.reached"

    board = provisioned_board(tmp_path / "flash")
    seen: list[tuple[bool, str, int]] = []  # (a firmware runs, its state, its relays)

    async def watch_board() -> None:
        while True:
            handle = board._firmware
            if handle is None:
                seen.append((False, "", 0))
            else:
                seen.append((True, str(handle.state_name), int(handle.outputs)))
            await asyncio.sleep(0.01)

    site = site_config(rtu_bus("usb", 115200), [("sio", "SIO-1", "usb", UNIT)])
    bus = site.buses[0]
    assert isinstance(bus, RtuBus)
    site = site.model_copy(update={"buses": [bus.model_copy(update={"port": board.data_path})]})
    watcher = asyncio.create_task(watch_board())
    try:
        with Mosquitto(tmp_path / "mq") as mq, FleetServer(tmp_path / "fleet") as fleet:
            fleet.register(SITE, GATEWAY)
            store = BundleStore(releases_dir(Settings(database_url=fleet.database_url)))

            async def upload() -> None:
                async with fleet.app.state.sessions() as session:
                    await add_release(session, store.receive_file(bundle), "test")
                    await session.commit()

            async def command() -> bytes:
                async with fleet.app.state.sessions() as session:
                    gw = await gateway_of(session, SITE, GATEWAY)
                    rel = await find_release(session, "0.2.0", None)
                    sent = await command_release(session, "test", gw, rel, fleet.url)
                    await session.commit()
                    return sent.payload

            fleet.run(upload())
            config = tmp_path / "site.toml"
            uplink = f'\n[uplink]\nbroker = "mqtt://127.0.0.1:{mq.port}"\nbatch_interval_s = 0.2\n'
            config.write_text(to_toml(site) + uplink)
            outbound = Outbound(BrokerUrl("127.0.0.1", mq.port), client_id="fleet-out")
            supervisor = Supervisor(
                state, config, log, ("--ota-sio1-repl", f"sio={board.path}"), {ENV: str(pause)}
            )
            async with recording(mq.port) as rec, outbound.running(), supervisor.running():
                await asyncio.wait_for(outbound.connected.wait(), 10)
                await until(lambda: bool(statuses(rec)), 60, "the gateway's first status", log)
                await until(lambda: seen[-1][1:] == ("CLAIMED", 0b0011), 30, "claimed", log)
                assert await outbound.send(
                    SITE, GATEWAY, wire.Kind.OTA_COMMAND, fleet.run(command()), retain=True
                )
                for step in KILLS:
                    await until(
                        lambda: reached.is_file() and reached.read_text() == step,  # noqa: B023
                        240, f"the agent stopped at {step}", log,
                    )  # fmt: skip
                    reached.unlink()
                    supervisor.kill()
                    if step == "flashing":  # and once more as soon as the copy stops the board
                        await until(lambda: not seen[-1][0], 60, "the copy begins", log)
                        supervisor.kill()
                await until(
                    lambda: any(
                        s["state"] == "committed" and s["release"] == "0.2.0"
                        for s in statuses(rec)
                    ),
                    180, "0.2.0 committed", log,
                )  # fmt: skip
                await until(lambda: seen[-1][1:] == ("CLAIMED", 0b0011), 30, "claimed", log)
                done = statuses(rec)[-1]
    finally:
        watcher.cancel()
        board.close()

    assert done["running"] == {"version": "0.2.0", "slot": "a", "firmware": "1.2"}, done
    flashing = [s for s in statuses(rec) if s["state"] == "flashing"]
    assert flashing[0]["reason"].startswith("sio: SIO-1 firmware 1.1 → 1.2"), flashing[0]
    assert done["sio1_firmware"] == [
        {"device": "sio", "carried": "1.2", "running": "1.2", "result": "installed", "reason": ""}
    ], done
    assert board.installed_version() == (1, 2), "the board's flash holds 1.2"
    assert not [p.name for p in (tmp_path / "flash").iterdir() if p.name.endswith(".tmp")]
    states = [s["state"] for s in statuses(rec) if s["release"] == "0.2.0"]
    for step in ("downloading", "verifying", "installing", "flashing", "restarting", "checking"):
        assert step in states, (step, states)
    assert supervisor.starts == 2 + len(KILLS)  # the kills, one of them in the copy
    # the board stayed safe: never an output on without a claim of a running firmware
    unsafe = {s for s in seen if s[2] and (not s[0] or s[1] != "CLAIMED")}
    assert not unsafe, unsafe
    # and it went CLAIMED -> maintenance (no firmware running, relays off) -> CLAIMED
    runs = [s[0] for s in seen]
    assert False in runs, "the firmware stopped for the copy"
    first_stop = runs.index(False)
    assert "CLAIMED" in {s[1] for s in seen[:first_stop]}
    assert seen[-1][1] == "CLAIMED"

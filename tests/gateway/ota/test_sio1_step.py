"""The agent's SIO-1 firmware step against an in-memory gateway: the copy itself is replaced
(the real one, with mpremote and a simulated board, is in hil_tests/test_ota_sio1.py); what
is checked is what the agent decides and reports for each board."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.bus.config import RtuBus
from gateway.errors import CopyInterrupted, OtaError
from gateway.image import ProcessImage, Quality
from gateway.ota import sio1, slots
from gateway.ota.agent import OtaAgent
from gateway.ota.pause import ENV, checkpoint
from gateway.ota.state import UpdateState, save
from gateway.trust import TrustedKeys
from gateway.wire.ota import OtaCommand
from tests.gateway.ota.bundles import KEY

V1_1, V1_2 = 0x0101, 0x0102
COMMAND = OtaCommand(
    id=1, release="0.2.0", url="http://x/b", size=1, sha256="0" * 64, at=time.time()
)


def fake_gateway(firmware: int) -> Any:
    image = ProcessImage()
    image.update("sio", "fw_version", firmware)
    image.update("sio", "state", 1)
    board = SimpleNamespace(device="sio", claimed=True)
    bus = RtuBus(name="usb", kind="rtu", port="/dev/ttyACM1", baudrate=115200)
    return SimpleNamespace(
        image=image,
        uplink=None,
        engine=SimpleNamespace(rules={}),
        before_uplink=[],
        supervisor=SimpleNamespace(safety_ios=[board]),
        pollers={"sio": SimpleNamespace(device=SimpleNamespace(bus="usb", unit_id=7))},
        site=SimpleNamespace(bus=lambda name: bus),
    )


class Copies:
    """The copies asked for, and the error the next ones end in (None: they succeed)."""

    def __init__(self) -> None:
        self.asked: list[sio1.Board] = []
        self.error: Exception | None = None

    async def flash(self, board: sio1.Board, sources: Path) -> str:
        self.asked.append(board)
        if self.error is not None:
            raise self.error
        return "answers: firmware 1.2"


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> Copies:
    """The copy and the release of the port replaced."""
    copies = Copies()

    @contextlib.asynccontextmanager
    async def released(gateway: Any, sio: Any) -> AsyncIterator[None]:
        yield

    monkeypatch.setattr(sio1, "released", released)
    monkeypatch.setattr(sio1, "flash", copies.flash)
    return copies


def agent_for(tmp_path: Path, gw: Any, repl: dict[str, str], firmware_min: str | None) -> OtaAgent:
    state_dir = tmp_path / "state"
    save(state_dir, UpdateState(active="a", versions={"a": "0.1.0", "b": "0.2.0"},
                                installed="b", firmware_min=firmware_min))  # fmt: skip
    carried = slots.slot_dir(state_dir, "b") / "firmware"
    carried.mkdir(parents=True)
    for source in (Path(__file__).resolve().parents[3] / "firmware").glob("*.py"):
        (carried / source.name).write_text(source.read_text())
    (carried / "version.py").write_text("VERSION = (1, 2)\n")
    return OtaAgent(
        gw, state_dir, TrustedKeys.of(KEY.public), on_restart=lambda _: None, version="0.1.0",
        sio1_repl=repl,
    )  # fmt: skip


async def test_a_board_on_older_firmware_gets_the_release_s_and_reports_it(
    tmp_path: Path, copies: Copies
) -> None:
    gw = fake_gateway(V1_1)
    ota = agent_for(tmp_path, gw, {"sio": "/dev/ttyACM0"}, None)
    assert await ota._sio1_firmware(COMMAND, "b", finish=False)
    assert copies.asked == [sio1.Board("sio", "/dev/ttyACM0", "usb", "/dev/ttyACM1", 7)]
    (result,) = ota.state.sio1
    assert (result.result, result.running, result.carried) == ("installed", "1.2", "1.2")
    assert [r.state.value for r in ota.reports if r.state.value == "flashing"]
    assert ota.reports[-1].sio1_firmware == ota.state.sio1
    # the board answers 1.2 now, whatever the image still holds: the restart's hold is asked
    assert ota._board_firmware("sio") == V1_1  # the image's reading, until polled again
    gw.image.mark("sio", "fw_version", Quality.OFFLINE)
    assert ota._board_firmware("sio") == V1_2
    assert ota._firmware() == "1.2"


async def test_a_failed_copy_is_reported_and_the_update_goes_on(
    tmp_path: Path, copies: Copies
) -> None:
    copies.error = CopyInterrupted("copy interrupted: the board kept its previous firmware")
    ota = agent_for(tmp_path, fake_gateway(V1_1), {"sio": "/dev/ttyACM0"}, None)
    assert await ota._sio1_firmware(COMMAND, "b", finish=False)
    (result,) = ota.state.sio1
    assert (result.result, result.running) == ("failed", "1.1")
    assert result.reason == "copy interrupted: the board kept its previous firmware"


async def test_a_release_that_needs_the_new_firmware_stops_before_the_switch(
    tmp_path: Path, copies: Copies
) -> None:
    copies.error = CopyInterrupted("copy interrupted: the board kept its previous firmware")
    ota = agent_for(tmp_path, fake_gateway(V1_1), {"sio": "/dev/ttyACM0"}, "1.2")
    with pytest.raises(OtaError, match=r"needs SIO-1 firmware 1\.2 or later and sio runs 1\.1"):
        await ota._sio1_firmware(COMMAND, "b", finish=False)
    assert ota.state.sio1[0].result == "failed", "reported before the update fails"


async def test_without_a_repl_port_the_board_is_skipped_and_says_how(
    tmp_path: Path, copies: Copies
) -> None:
    ota = agent_for(tmp_path, fake_gateway(V1_1), {}, None)
    assert not await ota._sio1_firmware(COMMAND, "b", finish=False)
    assert not copies.asked
    (result,) = ota.state.sio1
    assert result.result == "skipped"
    assert "gateway run --ota-sio1-repl sio=/dev/ttyACM0" in result.reason


async def test_a_board_on_the_carried_firmware_is_left_alone_unless_a_copy_was_interrupted(
    tmp_path: Path, copies: Copies
) -> None:
    ota = agent_for(tmp_path, fake_gateway(V1_2), {"sio": "/dev/ttyACM0"}, "1.2")
    assert not await ota._sio1_firmware(COMMAND, "b", finish=False)
    assert not copies.asked
    assert ota.state.sio1[0].result == "current"
    # a restart in the middle of a copy: finished whatever the board says
    assert await ota._sio1_firmware(COMMAND, "b", finish=True)
    assert len(copies.asked) == 1


async def test_the_test_seam_stops_once_at_the_step_asked_for_and_is_off_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await asyncio.wait_for(checkpoint("verifying"), 1)  # no variable: never stops
    seam = tmp_path / "pause"
    seam.write_text("installing\nchecking\n")
    monkeypatch.setenv(ENV, str(seam))
    await asyncio.wait_for(checkpoint("verifying"), 1)  # not the next step asked for
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(checkpoint("installing"), 0.3)
    assert (tmp_path / "pause.reached").read_text() == "installing"
    assert seam.read_text() == "checking\n", "the next start goes past it"
    await asyncio.wait_for(checkpoint("installing"), 1)

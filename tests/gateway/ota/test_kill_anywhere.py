"""Property: ``kill -9`` of the gateway at any of the agent's steps, any number of times, leaves
a gateway that finishes the update or rolls it back — never one stuck, half switched or on a
slot that was not installed — and the SIO-1 firmware step runs to its end.

Each "process" is what the supervisor starts: the launcher's decision (its boot counter and
rollback), then an agent in a gateway that lives until the agent asks for its restart or is
killed. A kill is an exception raised at a step of the test seam (gateway/ota/pause.py),
which no handler of the agent catches, so nothing after it is written, as with SIGKILL. The
download, the bundle check, the slot's build and the copy to the board are in-memory here
(each is tested for real elsewhere); the agent's decisions, its state file, the slot link and
the launcher are the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.health_gate import HEALTHY, Verdict
from gateway.image import ProcessImage
from gateway.ota import agent as agent_module
from gateway.ota import launcher, sio1, slots
from gateway.ota.agent import OtaAgent
from gateway.ota.pause import STEPS
from gateway.ota.state import UpdateState, load, save
from gateway.trust import TrustedKeys
from gateway.wire.ota import OtaCommand
from tests.gateway.ota.bundles import KEY

FIRMWARE = Path(__file__).resolve().parents[3] / "firmware"
MAX_STARTS = 20


class Killed(BaseException):
    """SIGKILL at a step: nothing of the agent handles it."""


class World:
    """What outlives a process: the board's firmware and the kills still to come."""

    def __init__(self, kills: list[str], copy_fails: bool) -> None:
        self.kills = kills
        self.copy_fails = copy_fails
        self.board = 0x0101
        self.copies = 0
        self.trial_starts = 0

    async def checkpoint(self, step: str) -> None:
        if self.kills and self.kills[0] == step:
            self.kills.pop(0)
            raise Killed(step)

    def gateway(self) -> Any:
        image = ProcessImage()
        image.update("sio", "fw_version", self.board)
        image.update("sio", "state", 1)

        async def write(device: str, point: str, value: object) -> None:
            return None

        return SimpleNamespace(
            image=image, uplink=None, engine=SimpleNamespace(rules={}), before_uplink=[],
            supervisor=SimpleNamespace(safety_ios=[SimpleNamespace(device="sio", claimed=True)]),
            pollers={"sio": SimpleNamespace(device=SimpleNamespace(bus="usb", unit_id=7))},
            site=SimpleNamespace(bus=lambda name: _bus()),
            commands=SimpleNamespace(write=write),
        )  # fmt: skip


def _bus() -> Any:
    from gateway.bus.config import RtuBus

    return RtuBus(name="usb", kind="rtu", port="/dev/ttyACM1", baudrate=115200)


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The parts that are tested for real elsewhere, in memory; the world set per example."""
    holder = SimpleNamespace(world=None)
    sources = tmp_path_factory.mktemp("fw") / "firmware"
    shutil.copytree(FIRMWARE, sources, ignore=shutil.ignore_patterns("__pycache__"))
    (sources / "version.py").write_text("VERSION = (1, 2)\n")

    async def download(url: str, token: str, size: int, sha: str, into: Path, **_: Any) -> Any:
        path = into / f"{sha}.tar"
        path.write_bytes(b"x")
        return path, SimpleNamespace(received=1)

    def open_bundle(path: Path, trusted: Any, expect: Any, staging: Path) -> Any:
        staging.mkdir(exist_ok=True)
        return SimpleNamespace(manifest=SimpleNamespace(version="0.2.0", firmware_min=None))

    async def install(state_dir: Path, slot: Any, staging: Path, version: str, **_: Any) -> None:
        target = slots.slot_dir(state_dir, slot)
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        shutil.copytree(sources, target / "firmware")
        (target / "VERSION").write_text(version + "\n")

    @contextlib.asynccontextmanager
    async def released(gateway: Any, sio: Any) -> AsyncIterator[None]:
        yield

    async def flash(board: Any, sources: Path) -> str:
        world = holder.world
        world.copies += 1
        if world.copy_fails:
            raise GatewayError("copy interrupted: the board kept its previous firmware")
        world.board = 0x0102
        return "answers 1.2"

    async def checkpoint(step: str) -> None:
        await holder.world.checkpoint(step)

    monkeypatch.setattr(agent_module, "download", download)
    monkeypatch.setattr(agent_module, "open_bundle", open_bundle)
    monkeypatch.setattr(agent_module, "check_space", lambda *a: None)
    monkeypatch.setattr(agent_module, "checkpoint", checkpoint)
    monkeypatch.setattr(agent_module, "HEARTBEAT_DRAIN_S", 0.0)
    monkeypatch.setattr(slots, "install", install)
    monkeypatch.setattr(sio1, "released", released)
    monkeypatch.setattr(sio1, "flash", flash)
    return holder


async def one_process(
    world: World, state_dir: Path, healthy: bool, command: OtaCommand | None
) -> bool:
    """A start by the supervisor; whether the gateway still has something to finish."""
    slot, before = launcher.decide(state_dir)
    if before.trial:
        world.trial_starts += 1
    versions = load(state_dir).versions
    restarted: list[str] = []

    async def watch() -> Verdict:
        return HEALTHY if healthy else Verdict(False, "bus 'usb' did not poll")

    killed = False
    with pytest.MonkeyPatch.context() as env:
        env.setenv(launcher.SLOT_ENV, slot)
        ota = OtaAgent(
            world.gateway(), state_dir, TrustedKeys.of(KEY.public), on_restart=restarted.append,
            version=versions.get(slot, "0.1.0"), recheck_s=0.01, watch=watch,
            sio1_repl={"sio": "/dev/ttyACM0"},
        )  # fmt: skip
        try:
            async with ota:
                if command is not None:
                    await ota.command(command)
                while ota.busy and not restarted:  # noqa: ASYNC110 - the agent's own task
                    await asyncio.sleep(0.005)
        except Killed:  # the process ends here, with nothing more written
            killed = True
    return killed or bool(restarted)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kills=st.lists(st.sampled_from(STEPS), max_size=8),
    healthy=st.booleans(),
    copy_fails=st.booleans(),
)
def test_a_kill_at_any_step_ends_committed_or_rolled_back(
    fakes: Any, tmp_path_factory: pytest.TempPathFactory, kills: list[str], healthy: bool,
    copy_fails: bool,
) -> None:  # fmt: skip
    kills = sorted(kills, key=STEPS.index)  # the order the agent reaches them
    world = fakes.world = World(list(kills), copy_fails)
    state_dir = tmp_path_factory.mktemp("state")
    save(state_dir, UpdateState(active="a", versions={"a": "0.1.0"}))
    slots.slot_dir(state_dir, "a").mkdir()
    (slots.slot_dir(state_dir, "a") / "VERSION").write_text("0.1.0\n")
    slots.switch(state_dir, "a")
    command = OtaCommand(
        id=1, release="0.2.0", url="http://fleet/b", size=1, sha256="0" * 64, at=0.0
    )

    async def scenario() -> None:
        pending = await one_process(world, state_dir, healthy, command)
        starts = 1
        while pending:
            starts += 1
            assert starts <= MAX_STARTS, f"no end after {MAX_STARTS} starts: {load(state_dir)}"
            pending = await one_process(world, state_dir, healthy, None)

    asyncio.run(scenario())
    final = load(state_dir)
    assert final.state in {"committed", "rolled-back"}, final
    assert not final.trial
    assert slots.current(state_dir) in (final.active, None)
    if final.active is not None:
        assert (slots.slot_dir(state_dir, final.active) / "VERSION").is_file()
    if final.state == "committed":
        assert healthy
        assert (final.active, final.versions["b"]) == ("b", "0.2.0")
    else:
        assert final.active == "a", "back on the release that ran"
    # rolled back although healthy: only by the launcher, the trial killed max_boots times
    if final.state == "rolled-back" and healthy:
        assert world.trial_starts >= final.max_boots, (kills, world.trial_starts)
    # the firmware step ran to its end: the board runs what the release carries, or the copy
    # failed and said so
    (result,) = final.sio1
    assert result.result == ("failed" if copy_fails else "installed"), result
    assert world.board == (0x0101 if copy_fails else 0x0102)
    assert world.copies >= 1

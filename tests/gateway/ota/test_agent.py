"""The OTA agent end to end on one machine: a real HTTP download, a real slot built by pip
from the bundle's wheel, the restart deferred while a charger charges, and the verdict of the
health window committing the release or returning to the previous slot."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.health_gate import HEALTHY, Verdict
from gateway.image import ProcessImage
from gateway.ota import slots
from gateway.ota.agent import OtaAgent
from gateway.ota.bundle import build_bundle, this_platform, this_python
from gateway.ota.launcher import SLOT_ENV
from gateway.ota.state import UpdateState, load, save
from gateway.trust import SigningKey, TrustedKeys
from gateway.wire.ota import OtaCommand
from tests.gateway.ota.bundles import KEY, real_wheel
from tests.gateway.ota.serving import Served, serve


def fake_gateway() -> Any:
    return SimpleNamespace(
        image=ProcessImage(), uplink=None, engine=SimpleNamespace(rules={}), before_uplink=[]
    )


def make_bundle(tmp_path: Path, version: str, key: SigningKey = KEY) -> bytes:
    house = tmp_path / f"house-{version}"
    house.mkdir()
    real_wheel(house, version)
    out = tmp_path / f"{version}.tar"
    build_bundle(
        out, wheelhouse=house, firmware=None, version=version, min_version="0.0.1",
        platform=this_platform(), python=this_python(), key=key,
    )  # fmt: skip
    return out.read_bytes()


def command(url: str, data: bytes, cid: int = 1) -> OtaCommand:
    return OtaCommand(
        id=cid, release="0.2.0", url=url, token="tok", size=len(data),
        sha256=hashlib.sha256(data).hexdigest(), at=time.time(),
    )  # fmt: skip


def agent(gw: Any, state: Path, restarts: list[str], verdict: Verdict = HEALTHY) -> OtaAgent:
    async def watch() -> Verdict:
        return verdict

    return OtaAgent(
        gw, state, TrustedKeys.of(KEY.public), on_restart=restarts.append, version="0.1.0",
        recheck_s=0.05, watch=watch,
    )  # fmt: skip


async def until(check: Any, within_s: float = 120.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_install_waits_for_the_charger_then_unhealthy_rolls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = tmp_path / "state"
    save(state_dir, UpdateState(active="a", versions={"a": "0.1.0"}))
    slots.switch(state_dir, "a")
    monkeypatch.setenv(SLOT_ENV, "a")
    data = make_bundle(tmp_path, "0.2.0")
    gw = fake_gateway()
    gw.image.update("charger-1", "cp_state", 2)  # C — charging
    restarts: list[str] = []
    with serve(Served(data)) as served:
        ota = agent(gw, state_dir, restarts)
        async with ota:
            await ota.command(command(served.url, data))
            await until(lambda: ota.state.state == "waiting")
            assert ota.state.reason == "charger-1 is charging"
            assert not restarts
            gw.image.update("charger-1", "cp_state", 0)  # the car left
            await until(lambda: bool(restarts))
    states = [r.state.value for r in ota.reports]
    assert states[0] == "idle"
    assert [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s][1:] == [
        "downloading", "verifying", "installing", "waiting", "restarting",
    ]  # fmt: skip
    assert restarts == ["restarting into release 0.2.0"]
    site = next((state_dir / "ota/slots/b/venv/lib").glob("python*/site-packages"))
    assert (site / "doorstep_marker.py").read_text() == "VERSION = '0.2.0'\n"
    saved = load(state_dir)
    assert (saved.active, saved.previous, saved.trial) == ("b", "a", True)
    assert slots.current(state_dir) == "b"

    # the new version starts (the launcher says slot b) and fails its health window
    monkeypatch.setenv(SLOT_ENV, "b")
    restarts.clear()
    unhealthy = Verdict(False, "bus 'rtu-1' did not complete a single transaction")
    ota = agent(fake_gateway(), state_dir, restarts, unhealthy)
    async with ota:
        await until(lambda: bool(restarts))
    last = ota.reports[-1]
    assert last.state.value == "rolled-back"
    assert "release 0.2.0 was unhealthy: bus 'rtu-1'" in last.reason
    assert last.reason.endswith("back to 0.1.0")
    assert slots.current(state_dir) == "a"
    assert (load(state_dir).active, load(state_dir).trial) == ("a", False)


async def test_a_healthy_start_commits_and_a_refused_bundle_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = tmp_path / "state"
    versions = {"a": "0.1.0", "b": "0.2.0"}
    save(state_dir, UpdateState(active="b", previous="a", trial=True, versions=versions))
    slots.switch(state_dir, "b")
    monkeypatch.setenv(SLOT_ENV, "b")
    restarts: list[str] = []
    ota = agent(fake_gateway(), state_dir, restarts)
    async with ota:
        await until(lambda: ota.state.state == "committed")
        assert ota.reports[-1].running.slot == "b"
        assert ota.reports[-1].previous == "0.1.0"
        data = make_bundle(tmp_path, "0.2.0", key=SigningKey.generate())
        with serve(Served(data)) as served:
            await ota.command(command(served.url, data, cid=7))
            await until(lambda: ota.state.state == "failed")
    assert not restarts
    assert ota.state.reason.startswith("bundle refused (unknown-key)")
    assert (ota.state.active, ota.state.trial) == ("b", False)
    assert not (state_dir / "ota/slots/a/venv").exists(), "nothing installed"


async def test_a_gateway_killed_while_downloading_resumes_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = tmp_path / "state"
    monkeypatch.setenv(SLOT_ENV, "a")
    data = make_bundle(tmp_path, "0.2.0", key=SigningKey.generate())
    with serve(Served(data)) as served:
        order = command(served.url, data, cid=3)
        # what a gateway killed at 40 % of the download leaves behind
        save(state_dir, UpdateState(active="a", versions={"a": "0.1.0"}, handled=3, command=3,
                                    release="0.2.0", state="downloading"))  # fmt: skip
        (state_dir / "ota" / "command.json").write_text(order.model_dump_json())
        downloads = state_dir / "ota" / "downloads"
        downloads.mkdir()
        (downloads / f"{order.sha256}.part").write_bytes(data[: len(data) * 2 // 5])
        ota = agent(fake_gateway(), state_dir, [])
        async with ota:
            await until(lambda: ota.state.state == "failed")
    assert served.ranges == [f"bytes={len(data) * 2 // 5}-"]
    assert ota.state.reason.startswith("bundle refused (unknown-key)")
    assert [r.state.value for r in ota.reports][:2] == ["downloading", "downloading"]


async def test_a_cancel_while_waiting_leaves_the_running_slot_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = tmp_path / "state"
    save(state_dir, UpdateState(active="a", versions={"a": "0.1.0"}))
    slots.switch(state_dir, "a")
    monkeypatch.setenv(SLOT_ENV, "a")
    data = make_bundle(tmp_path, "0.2.0")
    gw = fake_gateway()
    gw.engine.rules["fire-recall"] = SimpleNamespace(active=True)
    restarts: list[str] = []
    with serve(Served(data)) as served:
        ota = agent(gw, state_dir, restarts)
        async with ota:
            await ota.command(command(served.url, data, cid=4))
            await until(lambda: ota.state.state == "waiting")
            assert ota.state.reason == "interlock fire-recall active"
            cancel = command(served.url, data, cid=5).model_copy(update={"action": "cancel"})
            await ota.command(cancel)
            assert ota.state.state == "cancelled"
            await asyncio.sleep(0.2)
    assert not restarts
    assert (load(state_dir).active, slots.current(state_dir)) == ("a", "a")


async def test_a_commit_says_when_the_sio1_runs_other_firmware_than_the_release_carries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = tmp_path / "state"
    versions = {"a": "0.1.0", "b": "0.2.0"}
    save(state_dir, UpdateState(active="b", previous="a", trial=True, versions=versions))
    carried = slots.slot_dir(state_dir, "b") / "firmware"
    carried.mkdir(parents=True)
    (carried / "version.py").write_text("VERSION = (1, 1)\n")
    monkeypatch.setenv(SLOT_ENV, "b")
    gw = fake_gateway()
    gw.image.update("sio", "fw_version", 0x0100)
    ota = agent(gw, state_dir, [])
    async with ota:
        await until(lambda: ota.state.state == "committed")
    last = ota.reports[-1]
    assert last.running.firmware == "1.0"
    assert last.reason.startswith("the SIO-1 runs firmware 1.0, this release carries 1.1")


async def test_a_command_during_the_health_window_is_taken_when_sent_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = tmp_path / "state"
    versions = {"a": "0.1.0", "b": "0.2.0"}
    save(state_dir, UpdateState(active="b", previous="a", trial=True, versions=versions))
    monkeypatch.setenv(SLOT_ENV, "b")
    proven = asyncio.Event()

    async def watch() -> Verdict:
        await proven.wait()
        return HEALTHY

    ota = OtaAgent(
        fake_gateway(), state_dir, TrustedKeys.of(KEY.public), on_restart=lambda r: None,
        version="0.2.0", watch=watch,
    )  # fmt: skip
    data = make_bundle(tmp_path, "0.3.0", key=SigningKey.generate())
    with serve(Served(data)) as served:
        async with ota:
            await until(lambda: ota.state.state == "checking")
            order = command(served.url, data, cid=9).model_copy(update={"release": "0.3.0"})
            await ota.command(order)
            assert ota.state.handled < 9, "not taken during the health window"
            proven.set()
            await until(lambda: ota.state.state == "committed")
            await ota.command(order)  # the fleet sends it again
            await until(lambda: ota.state.state == "failed")
    assert ota.state.handled == 9
    assert ota.state.reason.startswith("bundle refused (unknown-key)")

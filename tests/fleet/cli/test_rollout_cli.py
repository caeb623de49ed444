"""``fleet rollout``: a preview stores nothing, a rollout starts, shows its phases, pauses,
resumes and aborts; a phase written wrong is refused naming the option (exit 2)."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from fleet.core.db import open_database, sessions
from fleet.registry import register_gateway
from fleet.releases.tables import Release
from tests.fleet.cli.test_cli import fleet

pytestmark = pytest.mark.fleet


async def seed(url: str) -> None:
    engine = await open_database(url)
    try:
        async with sessions(engine).begin() as session:
            for i in range(4):
                await register_gateway(session, "estate", f"gw-{i}")
            session.add(
                Release(
                    version="1.1.0", platform="linux-aarch64", python="3.11", min_version="1.0.0",
                    key_id="k1", size=1, sha256=hashlib.sha256(b"1.1.0").hexdigest(),
                    manifest={}, uploaded_by="test",
                )
            )  # fmt: skip
    finally:
        await engine.dispose()


def test_a_rollout_from_the_command_line(
    fleet_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(seed(fleet_db_url))
    create = [
        "rollout", "create", "spring", "--release", "1.1.0", "--site", "estate",
        "--phase", "canary:count=1", "--phase", "rest",
        "--base-url", "http://fleet.example:8000", "--db", fleet_db_url,
    ]  # fmt: skip
    code, out = fleet([*create, "--preview"], capsys)
    assert (code, out) == (0, "canary: estate/gw-0\nrest: estate/gw-1, estate/gw-2, estate/gw-3\n")
    assert fleet(["rollout", "list", "--db", fleet_db_url], capsys) == (0, "no rollouts\n")

    code, out = fleet(create, capsys)
    assert code == 0
    assert out.startswith("rollout spring of 1.1.0 started\ncanary: estate/gw-0\n")
    code, out = fleet(["rollout", "show", "spring", "--db", fleet_db_url], capsys)
    assert code == 0
    assert "spring  1.1.0  running in canary" in out
    assert "    estate/gw-0" in out

    pause = ["rollout", "pause", "spring", "-m", "holiday", "--db", fleet_db_url]
    assert fleet(pause, capsys) == (0, "rollout spring: paused\n")
    code, out = fleet(["rollout", "list", "--db", fleet_db_url], capsys)
    assert "paused in canary — paused by cli:" in out
    assert "holiday" in out
    assert fleet(["rollout", "resume", "spring", "--db", fleet_db_url], capsys) == (
        0,
        "rollout spring: running\n",
    )
    abort = ["rollout", "abort", "spring", "--revert", "--db", fleet_db_url]
    assert fleet(abort, capsys) == (0, "rollout spring: aborted\n")
    code, out = fleet(["rollout", "resume", "spring", "--db", fleet_db_url], capsys)
    assert (code, out) == (2, "fleet: error: rollout spring is aborted: nothing to resume\n")


def test_a_phase_written_wrong_names_the_option(
    fleet_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "rollout", "create", "x", "--release", "1", "--site", "estate",
        "--phase", "canary:count=two", "--base-url", "http://f", "--db", fleet_db_url,
    ]  # fmt: skip
    code, out = fleet(argv, capsys)
    assert code == 2
    assert "--phase 'canary:count=two'" in out
    assert "count" in out


def test_a_sites_maintenance_window_is_set_and_checked(
    fleet_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(seed(fleet_db_url))
    argv = ["rollout", "window", "estate", "01:00-05:00", "--timezone", "Asia/Shanghai"]
    code, out = fleet([*argv, "--db", fleet_db_url], capsys)
    assert code == 0
    assert out.startswith("estate: rollouts may update it 01:00-05:00 (Asia/Shanghai), ")
    wrong = ["rollout", "window", "estate", "1am-5am", "--db", fleet_db_url]
    code, out = fleet(wrong, capsys)
    assert code == 2
    assert "expected HH:MM-HH:MM" in out

"""Rollouts through the fleet's API and its driver, on SQLite and PostgreSQL: an operator
previews and starts a rollout, the driver commands the canaries, gateways' OTA statuses
(through the real ingest) advance it, a canary that rolls back pauses it, a gateway with
active interlocks waits, and every decision survives a new driver (a fleet restart)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from fleet.accounts.actor import cli_actor
from fleet.models import AuditEntry, Role
from fleet.registry import register_gateway
from fleet.releases.tables import OtaCommand, Release
from fleet.rollouts import service
from fleet.rollouts.driver import RolloutDriver
from gateway import wire
from gateway.wire.ota import OtaState, OtaStatus, Running
from tests.fleet.api_client import fleet_app, send, user

SITE = "estate"
GATEWAYS = [f"gw-{i}" for i in range(6)]
PHASES = [{"name": "canary", "count": 2}, {"name": "rest"}]


@pytest.fixture
async def app(fleet_db_url: str) -> AsyncIterator[FastAPI]:
    async with fleet_app(fleet_db_url) as fleet:
        async with fleet.state.sessions.begin() as session:
            for name in GATEWAYS:
                await register_gateway(session, SITE, name)
            for version in ("1.0.0", "1.1.0"):
                session.add(
                    Release(
                        version=version, platform="linux-aarch64", python="3.11",
                        min_version="0.0.0", key_id="k1", size=1,
                        sha256=hashlib.sha256(version.encode()).hexdigest(),
                        manifest={}, uploaded_by="test",
                    )
                )  # fmt: skip
        for name in GATEWAYS:
            await running(fleet, name, "1.0.0")
        yield fleet


async def running(
    app: FastAPI, gateway: str, version: str, state: OtaState = OtaState.IDLE, **more: Any
) -> None:
    """The gateway's OTA status, as it publishes it."""
    status = OtaStatus(
        state=state, running=Running(version=version, slot="a"), at=time.time(), **more
    )
    await send(app, SITE, gateway, status)
    await send(
        app, SITE, gateway,
        wire.State(status="online", version=version, started_at=time.time(), at=time.time()),
    )  # fmt: skip


async def commands(app: FastAPI) -> list[tuple[str, int]]:
    async with app.state.sessions() as session:
        rows = await session.execute(select(OtaCommand.id, OtaCommand.gateway_id))
        return [(f"gw-{gid - 1}", cid) for cid, gid in rows]


async def release_id(app: FastAPI, version: str) -> int:
    async with app.state.sessions() as session:
        found: int | None = await session.scalar(
            select(Release.id).where(Release.version == version)
        )
        assert found is not None
        return found


async def commit(app: FastAPI, gateway: str, command: int) -> None:
    await running(app, gateway, "1.1.0", OtaState.COMMITTED, command=command, release="1.1.0")


def new_rollout(release: int, **more: Any) -> dict[str, Any]:
    return {"name": "spring", "release": release, "site": SITE, "phases": PHASES, **more}


async def test_a_rollout_advances_on_committed_gateways_only_and_completes(app: FastAPI) -> None:
    release = await release_id(app, "1.1.0")
    async with user(app, "olga", Role.OPERATOR) as operator:
        shown = await operator.post("/api/rollouts/preview", json=new_rollout(release))
        assert shown.status_code == 200, shown.text
        assert [len(v) for v in shown.json()["phases"].values()] == [2, 4]
        created = await operator.post("/api/rollouts", json=new_rollout(release))
        assert created.status_code == 201, created.text
        driver = RolloutDriver(app.state.sessions, lambda: None)
        assert await driver.step() == 2
        canaries = await commands(app)
        for gateway, command in canaries:  # downloading and installing count for nothing
            await running(app, gateway, "1.0.0", OtaState.INSTALLING, command=command)
        assert await driver.step() == 0
        for gateway, command in canaries:
            await commit(app, gateway, command)
        driver = RolloutDriver(app.state.sessions, lambda: None)  # as after a fleet restart
        assert await driver.step() == 4
        for gateway, command in (await commands(app))[2:]:
            await commit(app, gateway, command)
        await driver.step()
        view = (await operator.get("/api/rollouts/spring")).json()
    assert view["status"] == "completed"
    assert view["counts"]["done"] == 6
    assert [p["counts"]["done"] for p in view["phases"]] == [2, 4]


async def test_a_canary_that_rolls_back_pauses_the_rollout_and_nothing_else_is_commanded(
    app: FastAPI,
) -> None:
    release = await release_id(app, "1.1.0")
    async with user(app, "olga", Role.OPERATOR) as operator:
        await operator.post("/api/rollouts", json=new_rollout(release))
        driver = RolloutDriver(app.state.sessions, lambda: None)
        await driver.step()
        (gateway, command), (other, other_command) = await commands(app)
        await running(
            app, gateway, "1.0.0", OtaState.ROLLED_BACK, command=command,
            reason="the new version exited at start 3 times",
        )  # fmt: skip
        await commit(app, other, other_command)
        for _ in range(3):
            assert await driver.step() == 0
        view = (await operator.get("/api/rollouts/spring")).json()
        assert view["status"] == "paused"
        assert f"phase canary: 1 of 2 failed (allowed 0): {SITE}/{gateway}" in view["reason"]
        [member] = [m for m in view["phases"][0]["gateways"] if m["gateway"].endswith(gateway)]
        assert "exited at start" in member["reason"]
        assert len(await commands(app)) == 2
        resumed = await operator.post("/api/rollouts/spring/resume", json={})
        assert resumed.status_code == 200, resumed.text
        assert await driver.step() == 4


async def test_a_gateway_whose_interlocks_are_active_waits_and_says_why(app: FastAPI) -> None:
    health = wire.Health(
        at=time.time(), uptime_s=1, version="1.0.0", cpu_percent=1, memory_mib=1,
        disk_free_mib=100, outbox_depth=0, outbox_dropped=0,
        loop={"interlocks_active": 1, "interlocks_active_names": "fire-alarm"},
    )  # fmt: skip
    await send(app, SITE, "gw-0", health)
    release = await release_id(app, "1.1.0")
    async with user(app, "olga", Role.OPERATOR) as operator:
        await operator.post("/api/rollouts", json=new_rollout(release))
        driver = RolloutDriver(app.state.sessions, lambda: None)
        await driver.step()
        view = (await operator.get("/api/rollouts/spring")).json()
    waiting = {m["gateway"]: m["waiting"] for m in view["phases"][0]["gateways"]}
    assert waiting[f"{SITE}/gw-0"] == "interlocks active"
    assert [g for g, _ in await commands(app)] == ["gw-1"]


async def test_only_operators_run_rollouts_and_every_action_is_audited(app: FastAPI) -> None:
    release = await release_id(app, "1.1.0")
    async with user(app, "mia", Role.MAINTAINER) as maintainer:
        refused = await maintainer.post("/api/rollouts", json=new_rollout(release))
        assert refused.status_code == 403
        assert (await maintainer.get("/api/rollouts")).status_code == 200
    async with user(app, "olga", Role.OPERATOR) as operator:
        await operator.post("/api/rollouts", json=new_rollout(release))
        assert (await operator.post("/api/rollouts/spring/pause", json={})).status_code == 200
        again = await operator.post("/api/rollouts", json=new_rollout(release))
        assert again.status_code == 422
        assert "exists already" in again.json()["detail"]
        empty = await operator.post(
            "/api/rollouts", json=new_rollout(release, name="none", site="nowhere")
        )
        assert empty.status_code == 422
        assert "no gateway" in empty.json()["detail"]
        aborted = await operator.post("/api/rollouts/spring/abort", json={"reason": "wrong build"})
        assert aborted.json()["rollout"]["status"] == "aborted"
        late = await operator.post("/api/rollouts/spring/resume", json={})
        assert late.status_code == 422
    async with app.state.sessions() as session:
        actions = list(
            await session.scalars(
                select(AuditEntry.action).where(AuditEntry.action.like("rollout.%"))
            )
        )
        assert actions == ["rollout.create", "rollout.pause", "rollout.abort"]
        assert await session.scalar(select(func.count()).select_from(OtaCommand)) == 0


async def test_a_site_outside_its_maintenance_window_waits(app: FastAPI) -> None:
    release = await release_id(app, "1.1.0")
    now = datetime.now(UTC)
    closed = f"{(now + timedelta(hours=2)):%H:%M}-{(now + timedelta(hours=3)):%H:%M}"
    async with user(app, "olga", Role.OPERATOR) as operator:
        change = {"maintenance_window": closed, "timezone": "UTC"}
        answer = await operator.put(f"/api/sites/{SITE}/maintenance-window", json=change)
        assert answer.status_code == 200, answer.text
        assert answer.json()["now_open"] is False
        wrong = await operator.put(
            f"/api/sites/{SITE}/maintenance-window", json={"maintenance_window": "late"}
        )
        assert wrong.status_code == 422
        assert "expected HH:MM-HH:MM" in wrong.json()["detail"]
        await operator.post("/api/rollouts", json=new_rollout(release))
        assert await RolloutDriver(app.state.sessions, lambda: None).step() == 0
        view = (await operator.get("/api/rollouts/spring")).json()
    waiting = {m["waiting"] for m in view["phases"][0]["gateways"]}
    assert waiting == {"outside its maintenance window"}


async def test_a_committed_canary_wakes_the_driver_the_next_phase_does_not_wait_for_its_tick(
    app: FastAPI,
) -> None:
    release = await release_id(app, "1.1.0")
    driver = RolloutDriver(app.state.sessions, lambda: None, tick_s=3600.0)
    app.state.rollouts = driver  # as the fleet composes it: ingest's route wakes this one
    async with user(app, "olga", Role.OPERATOR) as operator:
        await operator.post("/api/rollouts", json=new_rollout(release))
        assert await driver.step() == 2
        task = asyncio.create_task(driver.run())  # its first step commands nobody new
        try:
            canaries = await commands(app)
            for gateway, command in canaries:
                await running(app, gateway, "1.0.0", OtaState.INSTALLING, command=command)
            await asyncio.sleep(0.5)
            assert len(await commands(app)) == 2, "installing woke nobody"
            for gateway, command in canaries:
                await commit(app, gateway, command)
            deadline = time.monotonic() + 10.0  # the tick is an hour away
            while len(await commands(app)) < len(GATEWAYS):
                assert time.monotonic() < deadline, "the next phase waited for the tick"
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_an_abort_made_while_the_driver_decides_is_not_overwritten_by_its_step(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = await release_id(app, "1.1.0")
    async with user(app, "olga", Role.OPERATOR) as operator:
        await operator.post("/api/rollouts", json=new_rollout(release))
        driver = RolloutDriver(app.state.sessions, lambda: None)
        assert await driver.step() == 2
        for gateway, command in await commands(app):
            await commit(app, gateway, command)
        real = service.sites_of

        async def operator_aborts_meanwhile(*args: Any) -> Any:
            """The step has read the rollout; the operator's abort (another process, the
            CLI) commits now, before the step writes."""
            async with app.state.sessions.begin() as other:
                await service.act(other, cli_actor(), "spring", "abort", "stop")
            return await real(*args)

        monkeypatch.setattr("fleet.rollouts.driver.sites_of", operator_aborts_meanwhile)
        assert await driver.step() == 0, "the next phase was commanded after the abort"
        monkeypatch.setattr("fleet.rollouts.driver.sites_of", real)
        assert await driver.step() == 0
        view = (await operator.get("/api/rollouts/spring")).json()
    assert view["status"] == "aborted"
    assert len(await commands(app)) == 2

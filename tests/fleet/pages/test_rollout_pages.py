"""The release and rollout screens as people read them, rendered by the real app from a fleet
fed through the real ingest and driven by the real rollout driver: which version runs where
(as the gateways report it, filtered by site and version), a rollout's phases in words
(waiting and why, downloading, committed, rolled back and why, paused by itself), in both
languages, and who may act: a viewer sees no action, a maintainer cannot start a rollout."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from fleet.i18n.catalogue import translations
from fleet.models import Role
from fleet.pages.rollouts import LISTED, explain, lines
from fleet.registry import register_gateway
from fleet.releases.tables import OtaCommand, Release
from fleet.rollouts.driver import RolloutDriver
from fleet.rollouts.service import MemberView, PhaseView
from fleet.rollouts.tables import RolloutRecord
from gateway import wire
from gateway.wire.ota import OtaState, OtaStatus, Running
from tests.fleet.api_client import add_user, fleet_app, login, send
from tests.fleet.pages.test_pages import text

pytestmark = pytest.mark.fleet

SITE = "estate"
OLD, NEW = "1.0.0", "1.1.0"


@pytest.fixture
async def app(tmp_path: Any) -> AsyncIterator[FastAPI]:
    async with fleet_app(f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}") as fleet:
        async with fleet.state.sessions.begin() as session:
            for name in ("gw-0", "gw-1", "gw-2", "gw-3"):
                await register_gateway(session, SITE, name)
            await register_gateway(session, "north", "gw-9")  # never reported
            for version, firmware in ((OLD, None), (NEW, "1.2")):
                session.add(
                    Release(
                        version=version, platform="linux-aarch64", python="3.11",
                        min_version="0.9.0", firmware=firmware, key_id="k-2026",
                        size=12_500_000, sha256=hashlib.sha256(version.encode()).hexdigest(),
                        manifest={}, uploaded_by="olga",
                    )
                )  # fmt: skip
        for name in ("gw-0", "gw-1", "gw-2"):
            await report(fleet, name, OLD)
        await report(fleet, "gw-3", NEW)
        await add_user(fleet, "olga", Role.OPERATOR)
        await add_user(fleet, "mark", Role.MAINTAINER)
        await add_user(fleet, "vera", Role.VIEWER)
        yield fleet


async def report(
    app: FastAPI, gateway: str, version: str, state: OtaState = OtaState.IDLE, **more: Any
) -> None:
    """The gateway's OTA status and state, as it publishes them."""
    now = time.time()
    running = Running(version=version, slot="b" if version == NEW else "a", firmware="1.1")
    await send(app, SITE, gateway, OtaStatus(state=state, running=running, at=now, **more))
    await send(
        app, SITE, gateway, wire.State(status="online", version=version, started_at=now, at=now)
    )


async def release_id(app: FastAPI, version: str) -> int:
    async with app.state.sessions() as session:
        found: int | None = await session.scalar(
            select(Release.id).where(Release.version == version)
        )
    assert found is not None
    return found


async def commands(app: FastAPI) -> dict[int, int]:
    """Command id → gateway id, of every OTA command sent."""
    async with app.state.sessions() as session:
        rows = await session.execute(select(OtaCommand.id, OtaCommand.gateway_id))
        return dict(rows.all())


def spring(release: int) -> dict[str, Any]:
    return {
        "name": "spring", "release": release, "site": SITE,
        "phases": [{"name": "canary", "count": 1}, {"name": "rest"}],
    }  # fmt: skip


def member(html: str, gateway: str) -> str:
    found = re.search(rf'<li data-gateway="{re.escape(gateway)}".*?</li>', html, re.S)
    assert found is not None, f"{gateway} is not on the page"
    return text(found.group(0)).strip()


async def test_the_releases_and_which_version_runs_where(app: FastAPI) -> None:
    async with login(app, "vera") as b:
        page = text((await b.get("/releases")).text)
        assert "1.1.0 linux-aarch64 version 0.9.0 or newer 1.2 12.5 MB" in page
        assert "by olga k-2026" in page
        assert "1.0.0: 3 gateways" in page
        assert "1.1.0: 1 gateway" in page
        assert "unknown: 1 gateway" in page
        running = text((await b.get("/releases?live=1")).text)
        assert "estate/gw-0 1.0.0 a 1.1 idle" in running
        assert "estate/gw-3 1.1.0 b 1.1" in running
        assert "north/gw-9 offline unknown — — no update reported" in running
        only_new = text((await b.get("/releases?version=1.1.0&live=1")).text)
        assert "estate/gw-3" in only_new
        assert "estate/gw-0" not in only_new
        north = text((await b.get("/releases?site=north&version=unknown&live=1")).text)
        assert "north/gw-9" in north
        assert "estate" not in north
        assert "Roll out…" not in page  # a viewer looks only
    async with login(app, "olga") as b:
        assert 'href="/rollouts/new?release=' in (await b.get("/releases")).text


async def test_the_releases_in_chinese(app: FastAPI) -> None:
    async with login(app, "vera") as b:
        b.headers["Accept-Language"] = "zh-CN"
        page = text((await b.get("/releases")).text)
    assert "版本 0.9.0 或更新" in page
    assert "哪个版本在哪里运行" in page
    assert "1.0.0: 3 个网关" in page


async def test_a_viewer_sees_no_action_and_a_maintainer_cannot_start_a_rollout(
    app: FastAPI,
) -> None:
    release = await release_id(app, NEW)
    async with login(app, "olga") as operator:
        assert (await operator.post("/api/rollouts", json=spring(release))).status_code == 201
    for name, role in (("vera", "viewer"), ("mark", "maintainer")):
        async with login(app, name) as b:
            listing = (await b.get("/rollouts")).text
            assert 'id="new-rollout"' not in listing
            assert f"needs the operator role; you are {role}" in text(listing)
            form = (await b.get("/rollouts/new")).text
            assert 'id="rollout-form"' not in form
            assert 'id="create-button"' not in form
            assert "maintenance-window" not in form  # the windows are shown, not changed
            assert "estate : any time (UTC) — open now" in text(form)
            shown = (await b.get("/rollouts/spring")).text
            assert "data-api=" not in shown
            assert "Abort" not in shown
            refused = await b.post("/api/rollouts", json={**spring(release), "name": "autumn"})
            assert refused.status_code == 403
            assert "running rollouts" in refused.json()["detail"]
    async with app.state.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(RolloutRecord)) == 1


async def test_an_operator_gets_the_form_and_the_actions(app: FastAPI) -> None:
    release = await release_id(app, NEW)
    async with login(app, "olga") as b:
        form = (await b.get(f"/rollouts/new?release={release}")).text
        assert f'<option value="{release}" selected>1.1.0 (linux-aarch64)</option>' in form
        assert 'id="preview-button"' in form
        assert 'id="create-button"' in form
        assert 'data-api="/api/sites/estate/maintenance-window" data-method="PUT"' in form
        changed = await b.put(
            "/api/sites/estate/maintenance-window",
            json={"maintenance_window": "01:00-01:01", "timezone": "Asia/Shanghai"},
        )
        assert changed.status_code == 200, changed.text
        windows = text((await b.get("/rollouts/new?live=1")).text)
        assert "estate : 01:00-01:01 Asia/Shanghai —" in windows
        assert ("open now" if changed.json()["now_open"] else "closed now") in windows
        await b.post("/api/rollouts", json=spring(release))
        shown = (await b.get("/rollouts/spring?live=1")).text
        assert 'data-api="/api/rollouts/1/pause"' in shown
        assert 'data-route="/api/rollouts/1/abort-revert"' in shown
        assert "/resume" not in shown  # only a paused rollout resumes


async def test_a_rollout_live_in_words_and_how_it_paused_itself(app: FastAPI) -> None:
    release = await release_id(app, NEW)
    driver = RolloutDriver(app.state.sessions, lambda: None)
    async with login(app, "olga") as b:
        assert (await b.post("/api/rollouts", json=spring(release))).status_code == 201
        assert await driver.step() == 1
        [(command, _)] = (await commands(app)).items()
        await report(app, "gw-0", OLD, OtaState.DOWNLOADING, command=command, progress=0.4)
        html = (await b.get("/rollouts/spring?live=1")).text
        assert member(html, "estate/gw-0") == "estate/gw-0 downloading 40 %"
        assert "Skipped Already running 1.1.0 when they came in: estate/gw-3" in text(html)
        phase = text(html[html.index('data-phase="canary"') :].split("</section>")[0])
        assert "Phase canary current" in phase
        assert "1 gateway: 1 updating" in phase
        rest = text(html[html.index('data-phase="rest"') :].split("</section>")[0])
        assert "none yet: this phase fills when the rollout reaches it" in rest

        await report(
            app, "gw-0", OLD, OtaState.ROLLED_BACK, command=command,
            reason="the new version exited at start 3 times",
        )  # fmt: skip
        await driver.step()
        html = (await b.get("/rollouts/spring?live=1")).text
        page = text(html)
        assert page.strip().startswith("paused Release 1.1.0, phase canary")
        assert "It paused itself: phase canary: 1 of 1 failed (0 allowed): estate/gw-0" in page
        assert member(html, "estate/gw-0") == (
            "estate/gw-0 rolled back rolled-back: the new version exited at start 3 times"
        )
        assert 'data-api="/api/rollouts/1/resume"' in html
        listing = text((await b.get("/rollouts")).text)
        assert "spring paused Release 1.1.0, phase canary" in listing
        assert "1 of 4 done · 1 failed" in listing

        b.headers["Accept-Language"] = "zh"
        await b.post("/language", content="lang=zh-Hans&next=/", headers=_FORM)
        chinese = text((await b.get("/rollouts/spring?live=1")).text)
        assert "它自行暂停了： 阶段 canary：1 个中 1 个失败（允许 0 个）：estate/gw-0" in chinese
        assert "已回滚" in chinese

        aborted = await b.post("/api/rollouts/spring/abort", json={"reason": "bad build"})
        assert aborted.status_code == 200
        assert "由 user:olga 中止: bad build" in text((await b.get("/rollouts/spring")).text)
        await b.post("/language", content="lang=en&next=/", headers=_FORM)
        shown = text((await b.get("/rollouts/spring")).text)
        assert "aborted Release 1.1.0, phase canary" in shown
        assert "aborted by user:olga: bad build" in shown
        assert "Abort…" not in shown  # over: nothing left to do
        assert "Resume" not in shown


_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def test_the_screens_load_only_from_the_fleet_and_an_unknown_rollout_is_a_404(
    app: FastAPI,
) -> None:
    release = await release_id(app, NEW)
    async with login(app, "olga") as b:
        await b.post("/api/rollouts", json=spring(release))
        for path in ("/releases", "/rollouts", "/rollouts/new", "/rollouts/spring"):
            html = (await b.get(path)).text
            urls = re.findall(r'(?:src|href)=["\']([^"\']+)', html)
            assert [u for u in urls if re.match(r"^(https?:)?//", u)] == [], path
            for asset in (u for u in urls if u.startswith(("/vendor/", "/static/"))):
                assert (await b.get(asset)).status_code == 200, asset
        missing = await b.get("/rollouts/autumn")
        assert missing.status_code == 404
        assert "no rollout 'autumn'" in missing.text


def test_a_big_phase_lists_what_needs_a_look_first_and_folds_the_committed() -> None:
    views = [
        MemberView(gateway=f"s/gw-{i:03d}", phase="rest", progress="commanded") for i in range(60)
    ]
    views += [MemberView(gateway="s/late", phase="rest", progress="pending", waiting="offline")]
    views += [MemberView(gateway="s/bad", phase="rest", progress="failed", reason="failed: disk")]
    views += [MemberView(gateway=f"s/ok-{i}", phase="rest", progress="done") for i in range(3)]
    phase = PhaseView(name="rest", counts={}, gateways=views)
    shown = lines(phase)
    assert [m.gateway for m in shown.listed[:2]] == ["s/bad", "s/gw-000"]
    assert len(shown.listed) == LISTED
    assert shown.unlisted == 62 - LISTED  # the waiting one among them, after those updating
    assert shown.done == ["s/ok-0", "s/ok-1", "s/ok-2"]


@pytest.mark.parametrize(
    ("reason", "english", "chinese"),
    [
        ("phase canary: 2 of 5 failed (allowed 1): s/a, s/b",
         "phase canary: 2 of 5 failed (1 allowed): s/a, s/b",
         "阶段 canary：5 个中 2 个失败（允许 1 个）：s/a, s/b"),
        ("paused by user:olga: holiday", "paused by user:olga: holiday",
         "由 user:olga 暂停: holiday"),
        ("aborted by cli:root", "aborted by cli:root", "由 cli:root 中止"),
        ("timed out after 3600 s (accepted on resume)",
         "timed out after 3600 s (accepted on resume)", "3600 秒后超时（继续时已接受）"),
        ("rolled-back: exited at start", "rolled-back: exited at start",
         "rolled-back: exited at start"),  # a gateway's own sentence, as it sent it
    ],
)  # fmt: skip
def test_the_engines_reasons_in_the_persons_language(
    reason: str, english: str, chinese: str
) -> None:
    assert explain(reason, translations("en").gettext) == english
    assert explain(reason, translations("zh-Hans").gettext) == chinese

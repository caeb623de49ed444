"""The maintenance screens as a person reads them, rendered by the real app from a fleet fed
through the real ingest (hil_tests.fleet_scene), in both languages: the overview tells what
needs a person, the site page speaks labels and units, live refreshes carry ETags, the
language is chosen per user, and every asset comes from the fleet itself."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from fleet.models import Role
from fleet.registry import register_gateway
from hil_tests.fleet_scene import CRITICAL, registrations, scene
from tests.fleet.api_client import PASSWORD, add_user, client, fleet_app, send

pytestmark = pytest.mark.fleet


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    async with fleet_app(f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}") as app:
        async with app.state.sessions() as session, session.begin():
            for site, gateway, title in registrations():
                await register_gateway(session, site, gateway, title)
        for message in scene(time.time()):
            await send(app, message.site, message.gateway, message.payload)
        await add_user(app, "mark", Role.MAINTAINER)
        await add_user(app, "vera", Role.VIEWER)
        yield app


@asynccontextmanager
async def browser(
    app: FastAPI, name: str, language: str = "en"
) -> AsyncIterator[httpx.AsyncClient]:
    """A browser logged in as ``name``, asking for ``language`` (Accept-Language)."""
    async with client(app) as b:
        b.headers["Accept-Language"] = language
        answer = await b.post("/api/login", json={"name": name, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        yield b


def text(html: str) -> str:
    """What a person reads: the page without tags, spaces squeezed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


async def test_a_screen_asks_to_log_in_first_and_comes_back(app: FastAPI) -> None:
    async with client(app) as anonymous:
        answer = await anonymous.get("/sites/lianhua")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/login?next=%2Fsites%2Flianhua"
        assert (await anonymous.get("/?live=1")).status_code == 401  # the script logs in
        login = await anonymous.get("/login?next=//evil.example/")
        assert 'data-next="/"' in login.text  # never back to another site


async def test_the_overview_puts_what_needs_a_person_first_in_words(app: FastAPI) -> None:
    async with browser(app, "vera") as b:
        page = text((await b.get("/")).text)
    lianhua, harbour = page.index("Lianhua Garden"), page.index("Harbour View")
    assert lianhua < harbour < page.index("1 site where all is well") < page.index("Sunny Court")
    assert f"critical {CRITICAL} — 3 min. ago" in page  # the device named once
    assert "3 open alarms" in page
    assert "1 elevator out of service: elv-1" in page
    assert "1 charger unavailable: evse-1" in page
    assert "1 PV inverter curtailed or stopped: pv-1" in page
    assert "Gateway gw-02 has never connected. Add an [uplink] table" in page
    assert 'username = "gw-02"' in page
    assert "1 gateway offline: gw-03" in page


async def test_the_overview_in_chinese(app: FastAPI) -> None:
    async with browser(app, "vera", "zh-CN,zh;q=0.9") as b:
        html = (await b.get("/")).text
    page = text(html)
    assert '<html lang="zh-Hans">' in html
    assert "1 部电梯停止服务: elv-1" in page
    assert "紧急 evse-1" in page
    assert "网关 gw-02 从未连接" in page
    assert "3分钟前" in page


async def test_the_site_page_speaks_labels_units_and_states_not_registers(app: FastAPI) -> None:
    async with browser(app, "vera") as b:
        html = (await b.get("/sites/lianhua")).text
    page = text(html)
    charger = text(html[html.index('data-device="evse-1"') :].split("</article>")[0])
    assert "Charging F — unavailable" in charger
    assert "Locked out LOCKED OUT: manual reset needed" in charger
    assert "Residual current device DC TRIP" in charger
    assert "Temperature 35.5 °C" in charger
    assert "watchdog" not in charger.lower()  # bookkeeping stays off the screen
    sio = text(html[html.index('data-device="sio"') :].split("</article>")[0])
    assert "Fire alarm loop normal" in sio
    assert "Emergency stop released" in sio
    assert "Controller state controlled by the gateway" in sio
    assert "fire_alarm_loop" not in sio  # neither the register name nor the raw bitmap
    assert "w_sf" not in page
    assert "Scale factor" not in page
    assert "Service mode stopped, out of service" in page
    assert "Power limiting curtailed" in page
    assert re.search(r"Power 3,450 W \(stale\)", page)
    assert "wind_speed 4.50" in page  # a model without a profile: its points by name
    # the alarm states are marked as such, healthy ones are not
    assert re.search(r'state-alarm[^"]*" data-point="lockout_latched"', html)
    assert re.search(r'state-ok[^"]*" data-point="fire_alarm_loop"', html)
    # a value not reported for two report intervals is stale; a fresh one is not
    assert re.search(r'state-alarm stale" data-point="service_mode"', html)  # 20 min old
    assert re.search(r'state-ok" data-point="temperature"', html)


async def test_the_site_page_in_chinese(app: FastAPI) -> None:
    async with browser(app, "vera", "zh") as b:
        page = text((await b.get("/sites/lianhua")).text)
    assert "火灾报警回路 正常" in page
    assert "急停按钮 已释放" in page
    assert "充电 F — 不可用" in page
    assert "温度 35.5 °C" in page
    assert "服务模式 停止服务" in page


async def test_a_live_refresh_where_nothing_changed_is_a_bodiless_304(app: FastAPI) -> None:
    async with browser(app, "vera") as b:
        first = await b.get("/sites/lianhua?live=1")
        assert first.status_code == 200
        assert "<html" not in first.text  # only the live part
        etag = first.headers["etag"]
        await asyncio.sleep(1.1)  # the ages' words change; the data does not
        again = await b.get("/sites/lianhua?live=1", headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""
        now = time.time()
        await send(app, "lianhua", "gw-01", _position(5, now))
        changed = await b.get("/sites/lianhua?live=1", headers={"If-None-Match": etag})
        assert changed.status_code == 200
        assert "Floor 5 floor" in text(changed.text)


def _position(floor: int, now: float) -> object:
    from gateway import wire

    reading = wire.Reading(d="elv-1", p="car_position", v=floor, q="good", t=now)
    return wire.TelemetryBatch(seq=3, at=now, readings=[reading])


async def test_the_language_is_the_users_and_follows_them(app: FastAPI) -> None:
    async with browser(app, "mark", "en") as b:
        chosen = await b.post(
            "/language",
            content="lang=zh-Hans&next=/alarms",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert chosen.status_code == 303
        assert chosen.headers["location"] == "/alarms"
        assert "确认" in (await b.get("/alarms")).text
        refused = await b.post(
            "/language",
            content="lang=klingon",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert refused.status_code == 422
        assert "expected one of en, zh-Hans" in refused.text
    # another browser, asking for English: the stored choice wins
    async with browser(app, "mark", "en") as other:
        assert '<html lang="zh-Hans">' in (await other.get("/")).text


async def test_history_offers_labelled_points_and_draws_numbers_and_states(app: FastAPI) -> None:
    async with browser(app, "vera") as b:
        picker = (await b.get("/history?site=lianhua&device=evse-1")).text
        assert '<option value="l1_current" >Current L1</option>' in picker
        assert "watchdog_remaining" not in picker
        number = (await b.get("/history?site=lianhua&device=evse-1&point=l1_current")).text
        assert '"kind": "number"' in number
        assert "Range 0 – 25.8 A" in text(number)  # the ramp, and 0 A now it is locked out
        state = (await b.get("/history?site=lianhua&device=elv-1&point=service_mode")).text
        assert '"kind": "state"' in state
        assert '"labels": {"0": "stopped, out of service", "1": "normal service"' in state
        assert "4 changes in this span." in text(state)


async def test_every_page_loads_only_from_the_fleet_itself(app: FastAPI) -> None:
    async with browser(app, "vera") as b:
        for path in ("/", "/sites/lianhua", "/alarms", "/history", "/docs", "/login"):
            html = (await b.get(path)).text
            urls = re.findall(r'(?:src|href)=["\']([^"\']+)', html)
            urls += re.findall(r'url:\s*["\']([^"\']+)', html)
            outside = [u for u in urls if re.match(r"^(https?:)?//", u)]
            assert outside == [], f"{path} loads {outside}"
            for asset in (u for u in urls if u.startswith(("/vendor/", "/static/"))):
                assert (await b.get(asset)).status_code == 200, asset


async def test_the_alarm_list_groups_by_cause_and_shows_shelves_and_who_acknowledged(
    app: FastAPI,
) -> None:
    async with browser(app, "mark") as b:
        page = (await b.get("/alarms")).text
        cause = page.index(CRITICAL)
        assert page.index("1 alarm follows from this one") > cause
        assert page.index("evse-1 current not confirmed") > cause
        ids = [int(i) for i in re.findall(r'data-alarm="(\d+)"', page)]
        door = ids[-1]  # the minor one, last
        shelved = await b.post(
            f"/api/alarms/{door}/shelve", json={"minutes": 60, "reason": "hook being replaced"}
        )
        assert shelved.status_code == 200, shelved.text
        assert "Door 3 forced open" not in (await b.get("/alarms")).text
        listed = text((await b.get("/alarms?state=shelved")).text)
        assert "Shelved by mark until" in listed
        assert "hook being replaced" in listed
        acked = await b.post("/api/alarms/ack", json={"ids": [ids[0]]})
        assert acked.status_code == 200, acked.text
        assert "acknowledged by mark" in text((await b.get("/alarms?live=1")).text)
    async with browser(app, "vera", "zh") as viewer:
        page = (await viewer.get("/alarms")).text
        assert "确认报警需要维护员角色；您的角色是查看员。" in page
        assert 'type="checkbox"' not in page  # nothing to select for a viewer
        assert re.search(r"<button[^>]*disabled[^>]*>确认</button>", page, re.S)


async def test_the_device_catalog_comes_from_the_profiles_through_the_api(app: FastAPI) -> None:
    async with browser(app, "vera") as b:
        models = (await b.get("/api/models")).json()
    sio = models["SIO-1"]["points"]
    assert sio["fire_alarm_loop"]["label"] == "Fire alarm loop"
    assert sio["fire_alarm_loop"]["values"] == {"0": "FIRE ALARM", "1": "normal"}
    assert sio["fire_alarm_loop"]["alarm_values"] == [0]
    assert models["SUNSPEC-INV"]["points"]["w_sf"]["visible"] is False  # still in the API
    assert "heartbeat" not in sio  # write-only: never reported


def test_no_screen_carries_what_the_pages_policy_refuses() -> None:
    """Every screen is served with ``script-src 'self'; style-src 'self'``: an inline handler
    (``onchange=…``), a ``style=`` attribute or an inline script/style would do nothing for a
    person (a language switch that does not switch) — all behaviour lives in static files."""
    templates = Path(__file__).resolve().parents[3] / "fleet" / "web" / "templates"
    data = r'(?:src=|type="application/json")'  # a script file, or data that is not run
    inline = re.compile(rf"\son[a-z]+\s*=|\sstyle\s*=|<style|<script(?![^>]*{data})", re.I)
    found = {
        f"{path.name}:{n}": line.strip()
        for path in sorted(templates.glob("*.html"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if inline.search(line)
    }
    assert found == {}

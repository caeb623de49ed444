"""The maintenance web UI in a real browser (Debian's chromium via Playwright) against a real
fleet server (uvicorn, SQLite, the real ingest fed with ``gateway.wire`` payloads).

Asserts what a person sees: logging in, the overview of every gateway with its alarms and a
live refresh, each device drawn by its model, acknowledging alarms by role, history plots.

``fleet/web/models.json`` (enum labels, bit names and units the UI shows) is generated from
the gateway's device profiles; regenerate it with ``python -m hil_tests.test_fleet_ui``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from fleet.errors import LOGIN_FAILED
from fleet.models import Role
from gateway import wire
from gateway.devices.profile import Access, PollClass, available_models, load_profile

pytestmark = pytest.mark.hil

REPO = Path(__file__).resolve().parent.parent
MODELS_JSON = REPO / "fleet" / "web" / "models.json"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MISSING = "needs Debian's chromium: sudo apt-get install chromium (make test installs it as root)"
WAIT_MS = 10_000  # for what the UI shows after a refresh (every 2 s)

SITE, GW = "lianhua-garden", "gw-01"
SITE2, GW2 = "harbour-view", "gw-02"
PASSWORDS = {
    "vera": "viewer-password-1",
    "mark": "maintainer-password-1",
    "dora": "demoted-password-1",
}


# ---------- the device catalog the UI reads ----------


def catalog() -> dict[str, Any]:
    """Per device model: kind, description, key points, and each reported point's unit, enum
    labels and bit names (what fleet/web/app.js needs to show a value as a person reads it)."""
    out: dict[str, Any] = {}
    for model in available_models():
        profile = load_profile(model)
        points: dict[str, Any] = {}
        for p in profile.points:
            if p.access is Access.W or p.poll is PollClass.NEVER:
                continue  # never read, so never reported
            info: dict[str, Any] = {}
            if p.unit:
                info["unit"] = p.unit
            if p.enum:
                info["enum"] = {str(k): v for k, v in sorted(p.enum.items())}
            if p.bits:
                info["bits"] = {str(k): v for k, v in sorted(p.bits.items())}
            if p.description:
                info["description"] = p.description
            points[p.name] = info
        out[model] = {
            "kind": profile.kind.value,
            "description": profile.description,
            "key_points": list(profile.key_points),
            "points": points,
        }
    return out


def catalog_text() -> str:
    return json.dumps(catalog(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def test_ui_device_catalog_matches_the_gateway_profiles() -> None:
    assert MODELS_JSON.read_text(encoding="utf-8") == catalog_text(), (
        "fleet/web/models.json is out of date with gateway/profiles: "
        "run .venv/bin/python -m hil_tests.test_fleet_ui"
    )


# ---------- a real fleet server, seeded through the real ingest ----------


def chromium_binary() -> str:
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        if os.environ.get("CI") == "true":
            pytest.fail(f"chromium is missing under CI: {MISSING}")
        pytest.skip(MISSING)
    return CHROMIUM


Quality = Literal["good", "stale", "bad", "offline"]
Severity = Literal["critical", "major", "minor", "info"]


def reading(
    device: str, point: str, value: wire.Scalar, q: Quality = "good", at: float = 0.0
) -> wire.Reading:
    """One reading as a gateway reports it, read ``at`` (default: now)."""
    return wire.Reading(d=device, p=point, v=value, q=q, t=at or time.time())


def alarm(
    event_id: int, severity: Severity, message: str, device: str | None, key: str, at: float
) -> wire.Event:
    return wire.Event(
        id=event_id,
        kind="raised",
        key=key,
        severity=severity,
        interlock=key.split(":")[0],
        device=device,
        message=message,
        at=at,
    )


DEVICES = {
    "elv-1": "ELV-24476",
    "lck-1": "LCK-16",
    "evse-1": "EVSE-HEC",
    "pv-1": "SUNSPEC-INV",
    "meter": "SUNSPEC-METER",
    "weather": "WX-9",  # a model the UI does not know: a plain table of points
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from hil_tests.fleet_server import FleetServer  # imports the fleet app

    with FleetServer(tmp_path_factory.mktemp("fleet")) as server:
        seed(server)
        yield server


def seed(fleet: Any) -> None:
    now = time.time()
    fleet.register(SITE, GW, title="Lianhua Garden")
    fleet.register(SITE2, GW2, title="Harbour View")
    fleet.add_user("vera", Role.VIEWER, PASSWORDS["vera"])
    fleet.add_user("mark", Role.MAINTAINER, PASSWORDS["mark"])
    fleet.add_user("dora", Role.MAINTAINER, PASSWORDS["dora"])
    fleet.publish(
        SITE,
        GW,
        wire.State(
            status="online", version="1.4.2", started_at=now - 7200, at=now, devices=DEVICES
        ),
    )
    fleet.publish(
        SITE2,
        GW2,
        wire.State(
            status="offline",
            version="1.3.9",
            started_at=now - 90000,
            at=now - 600,
            devices={"elv-a": "ELV-24476"},
        ),
    )
    # an hour of charger current, a reading every 10 s (a ramp with ripple, so each plotted
    # interval has a min-max band), then the current state of everything
    history = [
        reading("evse-1", "l1_current", 6.0 + (i // 6) % 20 + (i % 2) * 0.8, at=now - 3600 + i * 10)
        for i in range(360)
    ]
    fleet.telemetry(SITE, GW, history)
    fleet.telemetry(
        SITE,
        GW,
        [
            reading("elv-1", "car_position", 3),
            reading("elv-1", "car_door_state", 4),
            reading("elv-1", "service_mode", 1),
            reading("elv-1", "car_status", 0),
            reading("elv-1", "passenger_status", 0),
            reading("elv-1", "message_code", 0),
            reading("lck-1", "item_bitmap", 0b1_1111_1111),  # 9 parcels
            reading("lck-1", "locked_bitmap", 0xFFFF),
            reading("lck-1", "forced_open_bitmap", 0b100),  # door 3 forced
            reading("lck-1", "board_status", 0),
            reading("evse-1", "cp_state", 2),
            reading("evse-1", "l1_current", 16.0),
            reading("evse-1", "l2_current", 15.9),
            reading("evse-1", "l3_current", 16.1),
            reading("evse-1", "max_current", 16.0),
            reading("evse-1", "applied_current", 16.0),
            reading("evse-1", "temperature", 35.5),
            reading("evse-1", "remote_lock", 1),
            reading("evse-1", "fault_code", 0),
            reading("pv-1", "w", 3450.0, q="stale"),
            reading("pv-1", "wmaxlimpct", 60.0),
            reading("pv-1", "wmaxlim_ena", 1),
            reading("pv-1", "st", 5),
            reading("meter", "w", -1200.0),
            reading("weather", "wind_speed", 4.5),
            reading("weather", "sensor_ok", True, q="bad"),
        ],
    )
    fleet.publish(
        SITE,
        GW,
        wire.Health(
            at=now,
            uptime_s=7200,
            version="1.4.2",
            cpu_percent=12.0,
            memory_mib=86.0,
            disk_free_mib=1500.0,
            outbox_depth=3,
            outbox_dropped=0,
            buses={"bldg-1": {"requests": 1200, "timeouts": 2}},
        ),
    )
    fleet.events(
        SITE,
        GW,
        [
            alarm(1, "critical", "Fire alarm: chargers locked", None, "I1:fire", now - 300),
            alarm(2, "major", "Charger evse-1 over temperature", "evse-1", "I4:evse-1", now - 200),
            alarm(3, "minor", "Locker lck-1 door 3 forced open", "lck-1", "lck:forced", now - 100),
            alarm(4, "info", "Meter export above 4 kW", "meter", "I2:export", now - 90),
            wire.Event(
                id=5,
                kind="cleared",
                key="I2:export",
                severity="info",
                interlock="I2",
                device="meter",
                message="Meter export back below 4 kW",
                at=now - 30,
            ),
        ],
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_binary()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, fleet: Any) -> Iterator[Any]:
    context = browser.new_context(base_url=fleet.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield pg
    finally:
        context.close()
    assert errors == [], f"JavaScript errors in the page: {errors}"


def log_in(page: Any, name: str, path: str = "/") -> None:
    """Open ``path``, which asks to log in first, log in, and land on ``path``."""
    from playwright.sync_api import expect

    page.goto(path)
    expect(page).to_have_url(re.compile("#/login$"))
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(PASSWORDS[name])
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#who-name")).to_have_text(name)
    expect(page).to_have_url(re.compile(re.escape(path.lstrip("/")) + "$"))


# ---------- what a person sees ----------


def test_login_refuses_a_wrong_password_and_shows_who_is_logged_in(page: Any) -> None:
    from playwright.sync_api import expect

    page.goto("/")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    page.get_by_label("Name").fill("mark")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-error")).to_have_text(LOGIN_FAILED)  # the server's words
    expect(page.locator("#who")).to_be_hidden()

    page.get_by_label("Password").fill(PASSWORDS["mark"])
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.locator("#who-name")).to_have_text("mark")
    expect(page.locator("#who-role")).to_have_text("maintainer")

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_text("You are logged out.")).to_be_visible()
    page.goto("/#/alarms")  # the session is gone on the server too
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()


def test_an_ended_session_asks_to_log_in_again_and_returns_to_the_page(page: Any) -> None:
    from playwright.sync_api import expect

    log_in(page, "vera", f"/#/site/{SITE}")
    expect(page.get_by_role("heading", name="Lianhua Garden")).to_be_visible()
    page.context.clear_cookies()  # as when the session expires: the next refresh gets a 401
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    expect(page.get_by_role("alert").first).to_have_text("Your session ended: please log in again.")
    expect(page.locator("#who")).to_be_hidden()
    page.get_by_label("Name").fill("vera")
    page.get_by_label("Password").fill(PASSWORDS["vera"])
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Lianhua Garden")).to_be_visible()
    expect(page).to_have_url(re.compile(f"#/site/{SITE}$"))


def test_overview_puts_the_offline_gateway_first_with_alarm_counts(
    page: Any, fleet: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    log_in(page, "vera")
    rows = page.locator("#overview tbody tr")
    expect(rows).to_have_count(2)
    first, second = rows.nth(0), rows.nth(1)
    expect(first).to_have_attribute("data-gateway", f"{SITE2}/{GW2}")
    expect(first).to_contain_text("offline")
    expect(first).to_contain_text("Harbour View")
    expect(second).to_contain_text("online")
    expect(second).to_contain_text("1.4.2")
    expect(second).to_contain_text(re.compile(r"\d+ s ago"))
    expect(second.locator('[data-severity="critical"]')).to_have_text("critical: 1")
    expect(second.locator('[data-severity="major"]')).to_have_text("major: 1")
    expect(second.locator('[data-severity="minor"]')).to_have_text("minor: 1")
    expect(second.locator('[data-severity="info"]')).to_have_text("info: 0")
    expect(page.locator("#updated")).to_have_text(re.compile(r"updated \d\d:\d\d:\d\d"))

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(tmp_path / "fleet-overview.png"), full_page=True)
    shutil.copyfile(tmp_path / "fleet-overview.png", ARTIFACTS / "fleet-overview.png")

    # live: a new alarm shows up without a reload, in the same row (patched, not redrawn)
    expect(first.locator('[data-severity="critical"]')).to_have_text("critical: 0")
    first.evaluate("row => { row.seenBeforeTheRefresh = true; }")
    fleet.events(
        SITE2,
        GW2,
        [
            alarm(
                1, "critical", "Elevator elv-a trapped passenger", "elv-a", "I6:elv-a", time.time()
            )
        ],
    )
    expect(first.locator('[data-severity="critical"]')).to_have_text("critical: 1")
    assert first.evaluate("row => row.seenBeforeTheRefresh === true"), "the row was redrawn"

    # a failing refresh says so, and the warning goes once the server answers again
    page.route("**/api/overview", lambda route: route.abort())
    expect(page.locator("#stale")).to_contain_text("Not updated since")
    page.unroute("**/api/overview")
    expect(page.locator("#stale")).to_be_hidden()


def test_site_page_shows_each_device_by_its_model_and_refreshes_live(page: Any, fleet: Any) -> None:
    from playwright.sync_api import expect

    log_in(page, "vera", f"/#/site/{SITE}")
    expect(page.get_by_role("heading", name="Lianhua Garden")).to_be_visible()
    elevator = page.locator('[data-device="elv-1"]')
    expect(elevator).to_contain_text("floor 3")
    expect(elevator).to_contain_text("open")
    expect(elevator).to_contain_text("normal service")
    locker = page.locator('[data-device="lck-1"]')
    expect(locker).to_contain_text("9/16 occupied")
    expect(locker).to_contain_text("door 3")
    charger = page.locator('[data-device="evse-1"]')
    expect(charger).to_contain_text("C — charging")
    expect(charger).to_contain_text("16.1 A")
    expect(charger.locator('[data-point="max_current"]')).to_have_text("16.0 A")
    expect(charger).to_contain_text("35.5 °C")
    pv = page.locator('[data-device="pv-1"]')
    expect(pv.locator('[data-point="w"]')).to_contain_text("3,450 W")
    expect(pv.locator('[data-point="w"]')).to_contain_text("(stale)")
    expect(pv.locator('[data-point="wmaxlimpct"]')).to_contain_text("60 %")
    expect(page.locator('[data-device="meter"] [data-point="w"]')).to_have_text("−1,200 W export")
    weather = page.locator('[data-device="weather"]')
    expect(weather.locator("tr", has_text="wind_speed")).to_contain_text("4.50")
    expect(weather.locator("tr", has_text="sensor_ok")).to_contain_text("bad")
    health = page.locator('[data-gateway="gw-01"] .health')
    expect(health).to_contain_text("12 %")
    expect(health).to_contain_text("3 queued")
    expect(health).to_contain_text("2 h 0 min")

    fleet.telemetry(SITE, GW, [reading("elv-1", "car_position", 5)])
    expect(elevator).to_contain_text("floor 5")


def test_viewer_cannot_acknowledge_and_a_maintainer_can(page: Any) -> None:
    from playwright.sync_api import expect

    log_in(page, "vera", "/#/alarms")
    row = page.locator("#alarms tbody tr", has_text="over temperature")
    expect(row).to_contain_text("major")
    expect(row.get_by_role("button", name="Acknowledge")).to_be_disabled()
    expect(page.locator("#ack-why")).to_contain_text("needs the maintainer role; you are viewer")
    # the most severe first; cleared ones only when asked for
    expect(page.locator("#alarms tbody tr").first).to_contain_text("critical")
    expect(page.locator("#alarms tbody tr", has_text="export above 4 kW")).to_have_count(0)
    page.get_by_label("Show").select_option("all")
    cleared = page.locator("#alarms tbody tr", has_text="export above 4 kW")
    expect(cleared).to_contain_text("✓ cleared")
    expect(cleared).to_contain_text("info")

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_text("You are logged out.")).to_be_visible()
    log_in(page, "mark", "/#/alarms")
    row = page.locator("#alarms tbody tr", has_text="over temperature")
    expect(row).to_contain_text("not acknowledged")
    row.get_by_role("button", name="Acknowledge").click()
    expect(row).to_contain_text("acknowledged by mark")
    expect(row.get_by_role("button", name="Acknowledge")).to_have_count(0)
    expect(page.get_by_role("status").filter(has_text="acknowledged")).to_be_visible()


def test_a_user_demoted_while_logged_in_sees_the_servers_refusal(page: Any, fleet: Any) -> None:
    from playwright.sync_api import expect

    log_in(page, "dora", "/#/alarms")
    row = page.locator("#alarms tbody tr", has_text="door 3 forced open")
    button = row.get_by_role("button", name="Acknowledge")
    expect(button).to_be_enabled()
    fleet.set_role("dora", Role.VIEWER)
    button.click()
    expect(page.get_by_role("alert")).to_have_text(
        "Not acknowledged: acknowledging alarms needs the maintainer role; you are viewer"
    )
    expect(page.locator("#who-role")).to_have_text("viewer")
    expect(button).to_be_disabled()
    expect(row).to_contain_text("not acknowledged")


def test_history_plots_the_min_max_band_and_average(page: Any) -> None:
    from playwright.sync_api import expect

    log_in(page, "vera", "/#/history")
    page.get_by_label("Site", exact=True).select_option(SITE)
    page.get_by_label("Gateway", exact=True).select_option(GW)
    page.get_by_label("Device", exact=True).select_option("evse-1")
    page.get_by_label("Point", exact=True).select_option("l1_current")
    avg = page.locator("svg.chart path.avg")
    expect(avg).to_have_attribute("d", re.compile(r"^M[\d.]+,[\d.]+( L[\d.]+,[\d.]+){100,}$"))
    expect(page.locator("svg.chart path.band")).to_have_attribute("d", re.compile(r"^M.* Z$"))
    expect(page.get_by_role("img")).to_contain_text("l1_current of evse-1")
    # the band spans the readings' minimum and maximum, the line their average
    expect(page.locator("figcaption")).to_contain_text("Range 6–25.8 A")
    expect(page.get_by_role("button", name="1 h")).to_have_attribute("aria-pressed", "true")
    page.get_by_role("button", name="6 h").click()
    expect(page).to_have_url(re.compile(r"range=6h"))
    expect(page.get_by_role("button", name="6 h")).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_role("button", name="1 h")).to_have_attribute("aria-pressed", "false")
    expect(avg).to_have_attribute("d", re.compile(r"^M"))


if __name__ == "__main__":
    MODELS_JSON.write_text(catalog_text(), encoding="utf-8")
    print(f"wrote {MODELS_JSON}")

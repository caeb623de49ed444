"""The maintenance screens in a real browser (Debian's headless chromium, driven by Playwright)
against a real fleet server (uvicorn, SQLite, the real ingest fed the messages of
``hil_tests.fleet_scene``), on a phone (390 px) and a desk (1366 px), in English and in
Simplified Chinese.

Each test asserts what a person reads — a label, a unit, a state in words, the worst alarm —
and that what they need is on screen without sideways scrolling, and saves a screenshot under
``test-artifacts/``. Every request the browser makes is recorded: one to anywhere but the
fleet itself fails the test.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.models import Role
from hil_tests import chromium
from hil_tests.fleet_scene import CRITICAL, registrations, scene

pytestmark = pytest.mark.hil

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
WAIT_MS = 15_000  # for what a screen shows after a refresh (every 2 s) on a busy machine
PASSWORDS = {"vera": "viewer-password-1", "mark": "maintainer-password-1"}
PHONE, DESK = 390, 1366
LOCALES = {"en": "en-GB", "zh-Hans": "zh-CN"}

#: What a person reads, per language.
WORDS = {
    "en": {
        "overview": "Overview",
        "elevators": "1 elevator out of service: elv-1",
        "never": "Gateway gw-02 has never connected",
        "fire": "Fire alarm loop",
        "normal": "normal",
        "estop": "released",
        "charging": "F — unavailable",
        "temperature": "35.5 °C",
        "acknowledge": "Acknowledge",
        "acknowledged": "acknowledged by mark",
        "done": "Alarm acknowledged.",
        "service": "stopped, out of service",
        "updated": "Updated",
        "ago": "ago",
        "caused": "1 alarm follows from this one",
    },
    "zh-Hans": {
        "overview": "总览",
        "elevators": "1 部电梯停止服务: elv-1",
        "never": "网关 gw-02 从未连接",
        "fire": "火灾报警回路",
        "normal": "正常",
        "estop": "已释放",
        "charging": "F — 不可用",
        "temperature": "35.5 °C",
        "acknowledge": "确认",
        "acknowledged": "已由 mark 确认",
        "done": "报警已确认。",
        "service": "停止服务",
        "updated": "更新于",
        "ago": "前",
        "caused": "1 个报警由此引起",
    },
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from hil_tests.fleet_server import FleetServer  # imports the fleet app

    with FleetServer(tmp_path_factory.mktemp("fleet")) as server:
        for site, gateway, title in registrations():
            server.register(site, gateway, title=title)
        for message in scene(time.time()):
            server.publish(message.site, message.gateway, message.payload)
        for name, role in (("vera", Role.VIEWER), ("mark", Role.MAINTAINER)):
            server.add_user(name, role, PASSWORDS[name])
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium.binary()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=chromium.ARGS)
        try:
            yield b
        finally:
            b.close()


class Screen:
    """One browser context: a person's phone or desk in their language, logged in."""

    def __init__(self, browser: Any, fleet: Any, width: int, language: str) -> None:
        self.fleet, self.width, self.language = fleet, width, language
        self.words = WORDS[language]
        self.context = browser.new_context(
            base_url=fleet.url,
            viewport={"width": width, "height": 860},
            locale=LOCALES[language],
            is_mobile=width < 500,
            has_touch=width < 500,
        )
        self.context.set_default_timeout(WAIT_MS)
        self.requests: list[str] = []
        self.context.on("request", lambda request: self.requests.append(request.url))
        self.page = self.context.new_page()
        self.errors: list[str] = []
        chromium.watch(self.page, self.errors)

    def log_in(self, name: str, path: str = "/") -> None:
        from playwright.sync_api import expect

        self.page.goto(path)
        expect(self.page).to_have_url(re.compile(r"/login\?next="))
        self.page.locator("#name").fill(name)
        self.page.locator("#password").fill(PASSWORDS[name])
        self.page.locator("#login-form button[type=submit]").click()
        if path == "/docs":  # Swagger UI's own page, without our header
            expect(self.page).to_have_url(re.compile(r"/docs$"))
        else:
            expect(self.page.locator("#who-name")).to_have_text(name)

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(
            path=str(ARTIFACTS / f"fleet-{name}-{self.language}-{self.width}.png"), full_page=True
        )

    def fits(self) -> None:
        """Nothing needs sideways scrolling."""
        overflow = self.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1, f"the page is {overflow} px wider than the {self.width} px screen"

    def close(self) -> None:
        self.context.close()
        own = (self.fleet.url, f"blob:{self.fleet.url}", "data:")
        outside = [u for u in self.requests if not u.startswith(own)]
        assert outside == [], f"the page requested URLs outside the fleet: {outside}"
        assert self.errors == [], f"JavaScript errors in the page: {self.errors}"


@pytest.fixture(params=[(PHONE, "en"), (PHONE, "zh-Hans"), (DESK, "en"), (DESK, "zh-Hans")],
                ids=["phone-en", "phone-zh", "desk-en", "desk-zh"])  # fmt: skip
def screen(request: pytest.FixtureRequest, browser: Any, fleet: Any) -> Iterator[Screen]:
    width, language = request.param
    s = Screen(browser, fleet, width, language)
    try:
        yield s
    finally:
        s.close()


def test_overview_tells_what_needs_a_person_and_stays_live(screen: Screen) -> None:
    from playwright.sync_api import expect

    w = screen.words
    screen.log_in("vera")
    page = screen.page
    expect(page.get_by_role("heading", name=w["overview"])).to_be_visible()
    cards = page.locator("#overview article")
    expect(cards.first).to_have_attribute("data-site", "lianhua")
    expect(cards.first).to_contain_text(CRITICAL)
    expect(cards.first).to_contain_text(w["elevators"])
    expect(cards.first).to_contain_text(w["never"])
    expect(cards.first.locator("[data-severity=critical]")).to_be_visible()
    expect(page.locator("#updated")).to_have_text(re.compile(re.escape(w["updated"]) + r" \d"))
    screen.fits()
    screen.shot("overview")
    # live: an age keeps counting, and a new offline gateway shows up without a reload
    expect(cards.first.locator("time.age").first).to_contain_text(w["ago"])
    expect(page.locator('[data-site="harbour"]')).to_be_visible()


def test_site_page_speaks_words_and_units(screen: Screen) -> None:
    from playwright.sync_api import expect

    w = screen.words
    screen.log_in("vera", "/sites/lianhua")
    page = screen.page
    sio = page.locator('[data-device="sio"]')
    sio.locator("details summary").click()
    expect(sio.locator('[data-point="fire_alarm_loop"]')).to_contain_text(w["fire"])
    expect(sio.locator('[data-point="fire_alarm_loop"] .value')).to_have_text(w["normal"])
    expect(sio.locator('[data-point="estop"] .value')).to_have_text(w["estop"])
    charger = page.locator('[data-device="evse-1"]')
    expect(charger.locator('[data-point="cp_state"] .value')).to_have_text(w["charging"])
    expect(charger.locator('[data-point="temperature"] .value')).to_have_text(w["temperature"])
    expect(page.locator('[data-point="w_sf"]')).to_have_count(0)
    expect(page.locator('[data-point="watchdog_remaining"]')).to_have_count(0)
    # the opened list stays open through live refreshes
    page.wait_for_timeout(2500)
    expect(sio.locator("details")).to_have_attribute("open", "")
    screen.fits()
    screen.shot("site")


def test_alarm_list_on_a_phone_or_desk_and_acknowledging(screen: Screen, fleet: Any) -> None:
    from playwright.sync_api import expect

    w = screen.words
    screen.log_in("mark", "/alarms")
    page = screen.page
    card = page.locator("#alarms > li", has_text=CRITICAL)
    button = card.get_by_role("button", name=w["acknowledge"], exact=True)
    expect(card).to_contain_text(screen.words["caused"])  # what follows from it, under it
    screen.fits()
    screen.shot("alarms")
    if card.get_by_text(w["acknowledged"]).count():  # an earlier width/language did it
        expect(button).to_have_count(0)
    else:
        expect(button).to_be_in_viewport()  # visible without scrolling sideways
        box = button.bounding_box()
        assert box is not None
        assert box["height"] >= 44, "a touch target is at least 44 px high"
        button.click()
        expect(page.locator("#notice")).to_have_text(w["done"])
        expect(card).to_contain_text(w["acknowledged"])
    screen.fits()


def test_history_of_a_number_and_of_a_state(screen: Screen) -> None:
    from playwright.sync_api import expect

    w = screen.words
    screen.log_in("vera", "/history?site=lianhua&device=evse-1&point=l1_current")
    page = screen.page
    plot = page.locator("figure.chart")
    expect(plot.locator("canvas")).to_have_count(1)  # drawn by uPlot
    expect(plot.locator("figcaption")).to_contain_text("25.8 A")
    width = plot.locator("canvas").evaluate("c => c.getBoundingClientRect().width")
    assert width >= screen.width * 0.8, "the plot uses the full width"
    screen.shot("history-number")
    page.goto("/history?site=lianhua&device=elv-1&point=service_mode&range=6h")
    expect(plot.locator("canvas")).to_have_count(1)
    expect(plot.locator("figcaption")).to_contain_text(w["service"])  # the state in words
    plot.locator("details summary").click()
    expect(plot.locator("details tr")).to_have_count(4)
    screen.fits()
    screen.shot("history-state")


def test_api_docs_work_without_the_internet(browser: Any, fleet: Any) -> None:
    from playwright.sync_api import expect

    s = Screen(browser, fleet, DESK, "en")
    try:
        s.log_in("mark", "/docs")  # behind the login by default, then back to /docs
        expect(s.page.locator(".swagger-ui .title")).to_contain_text("Doorstep fleet manager")
        expect(s.page.locator(".opblock-tag").first).to_be_visible()  # the API, browsable
    finally:
        s.close()


def test_a_person_switches_language_and_it_stays_with_them(browser: Any, fleet: Any) -> None:
    from playwright.sync_api import expect

    s = Screen(browser, fleet, PHONE, "en")
    try:
        s.log_in("vera", "/alarms")
        s.page.get_by_label("Language").select_option(label="简体中文")
        expect(s.page.locator("html")).to_have_attribute("lang", re.compile(r"^zh"))
        expect(s.page.locator("main h1")).to_have_text("报警")
        s.page.get_by_label("显示").select_option("all")  # what the alarm list shows
        expect(s.page).to_have_url(re.compile(r"state=all"))
        s.page.goto("/")  # stored with the person, not the page
        expect(s.page.locator("html")).to_have_attribute("lang", re.compile(r"^zh"))
        s.page.get_by_label("语言").select_option(label="English")
        expect(s.page.locator("html")).to_have_attribute("lang", "en")
    finally:
        s.close()


def test_the_narrowest_phone_logs_in_and_fits(browser: Any, fleet: Any) -> None:
    from playwright.sync_api import expect

    s = Screen(browser, fleet, 360, "en")
    try:
        s.page.goto("/")
        s.page.locator("#name").fill("mark")
        s.page.locator("#password").fill("not the password")
        s.page.locator("#login-form button[type=submit]").click()
        expect(s.page.locator("#login-error")).to_have_text("Wrong name or password.")
        s.fits()
        s.log_in("mark", "/alarms")
        for path in ("/", "/sites/lianhua", "/history?site=lianhua&device=evse-1", "/alarms"):
            s.page.goto(path)
            expect(s.page.locator("main h1")).to_be_visible()
            s.fits()
        first = s.page.locator("#alarms > li").first
        expect(first.locator(".sev").first).to_be_in_viewport()
    finally:
        s.close()


def test_acknowledging_a_selection_and_shelving_with_a_reason(browser: Any, fleet: Any) -> None:
    from playwright.sync_api import expect

    s = Screen(browser, fleet, DESK, "en")
    try:
        s.log_in("mark", "/alarms")
        page = s.page
        door = page.locator("#alarms > li", has_text="Door 3 forced open")
        door.locator("input[name=ids]").check()
        expect(page.locator("#paused")).to_be_visible()  # nothing moves while selecting
        page.locator("#ack-selected").click()
        expect(page.locator("#notice")).to_have_text("Alarms acknowledged.")
        expect(door).to_contain_text("acknowledged by mark")
        door.locator("details.shelve summary").click()
        door.get_by_label("Why").fill("hook being replaced")
        door.get_by_label("For").select_option(label="1 hour")
        door.get_by_role("button", name="Shelve", exact=True).click()
        expect(page.locator("#notice")).to_have_text("Alarm shelved.")
        expect(door).to_have_count(0)  # off the open list
        page.get_by_label("Show").select_option("shelved")
        shelved = page.locator("#alarms > li", has_text="Door 3 forced open")
        expect(shelved).to_contain_text("Shelved by mark until")
        expect(shelved).to_contain_text("hook being replaced")
        s.shot("alarms-shelved")
    finally:
        s.close()

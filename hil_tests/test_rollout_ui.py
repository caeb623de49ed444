"""The release and rollout screens in Debian's headless chromium against a real fleet server,
on a phone (390 px) and a desk (1366 px): a signed release uploaded through the API shows on
/releases with which version each gateway runs (as six gateways report it over the wire);
an operator goes from the release to a new rollout, previews who is in which phase, starts
it, watches its canary get commanded and download (the fleet's own rollout driver, gateways'
OTA statuses through the real ingest), pauses it with a reason, resumes it, and aborts it
asking the updated gateways to go back (the page says which cannot). A site's maintenance
window set from the page holds the canary until it opens; a refused name is named. Nothing scrolls
sideways, every touch target is at least 44 px, nothing comes from outside the fleet and the
page's policy refuses nothing."""

from __future__ import annotations

import re
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from fleet.models import Role
from fleet.releases.tables import OtaCommand
from fleet.rollouts.driver import RolloutDriver
from gateway import wire
from gateway.ota.bundle import build_bundle, this_platform, this_python
from gateway.trust import SigningKey
from gateway.wire.ota import OtaState, OtaStatus, Running
from hil_tests import chromium

pytestmark = pytest.mark.hil

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
WAIT_MS = 15_000
PASSWORD = "operator-password-1"
SITE = "estate"
GATEWAYS = [f"gw-{i}" for i in range(6)]
#: what a person can touch, and must be able to hit with a finger
TOUCH = "button, select, input:not([type=checkbox]), summary, a.button-link, .top nav a"


def bundle(directory: Path, version: str) -> bytes:
    """A signed release bundle (a stand-in wheel: the fleet checks files and signature, it
    never installs anything)."""
    house = directory / f"house-{version}"
    house.mkdir(parents=True)
    with zipfile.ZipFile(house / f"doorstep-{version}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(
            f"doorstep-{version}.dist-info/METADATA",
            f"Metadata-Version: 2.1\nName: doorstep\nVersion: {version}\n",
        )
    out = directory / f"doorstep-{version}.tar"
    build_bundle(
        out, wheelhouse=house, firmware=None, version=version, min_version="1.0.0",
        platform=this_platform(), python=this_python(), key=SigningKey.generate(),
    )  # fmt: skip
    return out.read_bytes()


def running(fleet: Any, gateway: str, state: OtaState = OtaState.IDLE, **more: Any) -> None:
    """The gateway's OTA status and state message, as it publishes them: it runs 1.0.0."""
    now = time.time()
    status = OtaStatus(state=state, running=Running(version="1.0.0", slot="a"), at=now, **more)
    fleet.publish(SITE, gateway, status)
    fleet.publish(
        SITE, gateway, wire.State(status="online", version="1.0.0", started_at=now, at=now)
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from hil_tests.fleet_server import FleetServer

    directory = tmp_path_factory.mktemp("fleet")
    with FleetServer(directory) as server:
        for name in GATEWAYS:
            server.register(SITE, name)
            running(server, name)
        server.add_user("olga", Role.OPERATOR, PASSWORD)
        with httpx.Client(base_url=server.url) as api:
            login = api.post("/api/login", json={"name": "olga", "password": PASSWORD})
            assert login.status_code == 200, login.text
            uploaded = api.post("/api/releases", content=bundle(directory, "1.1.0"))
            assert uploaded.status_code == 201, uploaded.text
        yield server


def step(fleet: Any) -> int:
    """One step of the fleet's rollout driver (the server runs without a broker)."""
    driver = RolloutDriver(fleet.app.state.sessions, lambda: None)
    commanded: int = fleet.run(driver.step())
    return commanded


def last_command(fleet: Any) -> int:
    async def go() -> int:
        async with fleet.app.state.sessions() as session:
            newest = select(OtaCommand.id).order_by(OtaCommand.id.desc())
            found: int | None = await session.scalar(newest)
        assert found is not None
        return found

    command: int = fleet.run(go())
    return command


def closed_window() -> str:
    """A daily window (UTC) that opens two hours from now: closed for the whole test."""
    start = (datetime.now(UTC) + timedelta(hours=2)).hour
    return f"{start:02d}:00-{(start + 1) % 24:02d}:00"


def fits(page: Any, width: int) -> None:
    """Nothing scrolls sideways; every visible touch target is at least 44 px high."""
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 1, f"{page.url}: {overflow} px wider than the {width} px screen"
    small = page.evaluate(
        """(selector) => Array.from(document.querySelectorAll(selector))
            .filter((e) => e.offsetParent !== null)
            .filter((e) => e.getBoundingClientRect().height < 43.5)
            .map((e) => e.outerHTML.slice(0, 80))""",
        TOUCH,
    )
    assert small == [], f"{page.url}: touch targets under 44 px: {small}"


@pytest.mark.parametrize("width", [390, 1366])
def test_an_operator_previews_starts_pauses_resumes_and_aborts_a_rollout(
    fleet: Any, width: int
) -> None:
    executable = chromium.binary()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    requests: list[str] = []
    errors: list[str] = []
    name = f"spring-{width}"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=chromium.ARGS)
        try:
            context = browser.new_context(
                base_url=fleet.url, viewport={"width": width, "height": 860}, locale="en-GB"
            )
            context.on("request", lambda r: requests.append(r.url))
            page = context.new_page()
            chromium.watch(page, errors)
            page.goto("/releases")
            page.locator("#name").fill("olga")
            page.locator("#password").fill(PASSWORD)
            page.locator("#login-form button[type=submit]").click()
            expect(page.locator("h1")).to_have_text("Releases")
            expect(page.locator("#releases")).to_contain_text("1.1.0")
            expect(page.locator("#releases")).to_contain_text("version 1.0.0 or newer")
            expect(page.locator("#version-counts")).to_contain_text("1.0.0: 6 gateways")
            expect(page.locator('#running tr[data-gateway="estate/gw-5"]')).to_contain_text("1.0.0")
            fits(page, width)
            page.screenshot(path=str(ARTIFACTS / f"fleet-releases-{width}.png"), full_page=True)

            page.get_by_role("link", name="Roll out…").click()
            expect(page.locator("h1")).to_have_text("New rollout")
            # the site's window, closed now: the canary will wait for it
            site_window = page.locator(f'#windows li[data-site="{SITE}"]')
            site_window.get_by_text("Change…").click()
            site_window.get_by_label("Window (HH:MM-HH:MM, empty: any time)").fill(closed_window())
            site_window.get_by_role("button", name="Save").click()
            expect(page.locator("#notice")).to_have_text("Maintenance window changed.")
            expect(site_window).to_contain_text("closed now")

            page.locator("#ro-name").fill("Spring!")  # refused, the field named
            page.locator("#ro-site").select_option(SITE)
            page.get_by_role("button", name="Preview").click()
            expect(page.locator("#notice")).to_contain_text("No preview: name: String should match")
            page.locator("#ro-name").fill(name)
            page.locator("#phase-0-gateways").fill("estate/gw-3")  # a hand-picked canary
            page.get_by_role("button", name="Add a phase").click()  # left empty: left out
            expect(page.locator("[data-phase-row]")).to_have_count(4)
            page.get_by_role("button", name="Preview").click()
            preview = page.locator("#preview")
            expect(preview.locator('li[data-phase="canary"]')).to_have_text(
                "canary: 1 gateway estate/gw-3"
            )
            expect(preview.locator('li[data-phase="half"]')).to_contain_text("half: 3 gateways")
            expect(preview.locator('li[data-phase="rest"]')).to_contain_text("rest: 2 gateways")
            fits(page, width)
            page.screenshot(path=str(ARTIFACTS / f"fleet-rollout-new-{width}.png"), full_page=True)

            page.get_by_role("button", name="Start the rollout").click()
            expect(page.locator("h1")).to_have_text(f"Rollout {name}")
            expect(page).to_have_url(re.compile(r"/rollouts/\d+$"))
            status = page.locator("#rollout .ro-status")
            expect(status).to_have_text("running")
            canary = page.locator('li[data-gateway="estate/gw-3"]')
            expect(canary).to_contain_text("pending")
            assert step(fleet) == 0  # outside the window: nothing is sent, the page says why
            expect(canary).to_have_text(
                "estate/gw-3 waiting: outside its site's maintenance window"
            )
            reopened = page.request.put(
                f"/api/sites/{SITE}/maintenance-window", data={"maintenance_window": ""}
            )
            assert reopened.ok, reopened.text()
            assert step(fleet) == 1  # the driver commands the canary; the page follows
            expect(canary).to_contain_text("command sent")
            running(fleet, "gw-3", OtaState.DOWNLOADING, command=last_command(fleet), progress=0.4)
            expect(canary).to_contain_text("downloading 40 %")

            page.get_by_text("Pause…").click()
            page.locator("#pause-reason").fill("holiday")
            page.get_by_role("button", name="Pause", exact=True).click()
            expect(page.locator("#notice")).to_have_text(
                "Rollout paused: no further gateway is commanded."
            )
            expect(status).to_have_text("paused")
            expect(page.locator("#reason")).to_have_text("paused by user:olga: holiday")
            fits(page, width)
            page.screenshot(path=str(ARTIFACTS / f"fleet-rollout-{width}.png"), full_page=True)

            page.get_by_role("button", name="Resume").click()
            expect(status).to_have_text("running")

            page.get_by_text("Abort…").click()
            page.get_by_label(
                "Ask the gateways that took it to go back to their previous version"
            ).check()
            page.get_by_role("button", name="Abort the rollout").click()
            expect(status).to_have_text("aborted")
            expect(page.locator("#notice")).to_contain_text(
                "Could not send back: estate/gw-3: no release (unknown) to go back to"
            )
            expect(page.locator("#actions")).to_have_count(0)

            page.goto("/rollouts")
            expect(page.locator(f'li[data-rollout="{name}"]')).to_contain_text("aborted")
            fits(page, width)
            page.screenshot(path=str(ARTIFACTS / f"fleet-rollouts-{width}.png"), full_page=True)
            context.close()
        finally:
            browser.close()
    outside = [u for u in requests if not u.startswith((fleet.url, "data:", "blob:"))]
    assert outside == []
    assert errors == []

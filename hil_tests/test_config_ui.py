"""The configuration screens in Debian's headless chromium against a real fleet server: an
operator on a phone pushes a document with a typo (refused beside it, naming the key), fixes
it, raises the export limit (named as a safety change, confirmed with the box), compares two
versions; nothing scrolls sideways and nothing is fetched from outside the fleet."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.models import Role
from hil_tests import chromium

pytestmark = pytest.mark.hil

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
WAIT_MS = 15_000
PASSWORD = "operator-password-1"
EXAMPLE = (REPO / "gateway" / "examples" / "community.toml").read_text()


def document(limit_w: int = 5000) -> str:
    text = EXAMPLE.replace('site = "lianhua-garden"', 'site = "s1"').replace(
        'id = "gw-01"', 'id = "gw-1"'
    )
    return text.replace("limit_w = 5000", f"limit_w = {limit_w}")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from hil_tests.fleet_server import FleetServer

    with FleetServer(tmp_path_factory.mktemp("fleet")) as server:
        server.register("s1", "gw-1")
        server.add_user("olga", Role.OPERATOR, PASSWORD)
        yield server


@pytest.mark.parametrize("width", [390, 1366])
def test_an_operator_pushes_fixes_confirms_and_compares(fleet: Any, width: int) -> None:
    executable = chromium.binary()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    requests: list[str] = []
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=chromium.ARGS)
        try:
            context = browser.new_context(
                base_url=fleet.url, viewport={"width": width, "height": 860}, locale="en-GB"
            )
            context.on("request", lambda r: requests.append(r.url))
            page = context.new_page()
            chromium.watch(page, errors)
            page.goto("/gateways/s1/gw-1/config")
            expect(page).to_have_url(re.compile(r"/login\?next="))
            page.locator("#name").fill("olga")
            page.locator("#password").fill(PASSWORD)
            page.locator("#login-form button[type=submit]").click()
            expect(page.locator("h1")).to_have_text("Configuration of s1/gw-1")

            if width == 390:  # the first run pushes; the second finds the versions there
                doc = page.locator("#document")
                doc.fill(document().replace("limit_w = 5000", "limit_ww = 5000"))
                page.locator("#comment").fill("first")
                page.get_by_role("button", name="Make this the desired version").click()
                expect(page.locator("#problems")).to_contain_text(
                    "safety.export_limit.limit_ww: unknown key"
                )
                expect(doc).to_have_value(re.compile("limit_ww = 5000"))
                doc.fill(document())
                page.get_by_role("button", name="Make this the desired version").click()
                expect(page.locator("#done")).to_have_text("version 1 is desired")

                page.locator("#document").fill(document(8000))
                page.get_by_role("button", name="Make this the desired version").click()
                expect(page.locator("#safety")).to_contain_text(
                    "safety.export_limit.limit_w: raised from 5000 to 8000"
                )
                page.get_by_label("I have checked this and make the change deliberately").check()
                page.get_by_role("button", name="Make this the desired version").click()
                expect(page.locator("#done")).to_have_text("version 2 is desired")

            page.get_by_role("button", name="Show the difference").click()
            expect(page.locator("#diff")).to_contain_text("+limit_w = 8000")
            expect(page.locator("#drift")).to_contain_text("has not reported what it runs yet")
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 1, f"{overflow} px wider than the {width} px screen"
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"fleet-config-{width}.png"), full_page=True)

            page.goto("/config")
            expect(page.locator("#config-list")).to_contain_text("s1/gw-1")
            context.close()
        finally:
            browser.close()
    outside = [u for u in requests if not u.startswith((fleet.url, "data:", "blob:"))]
    assert outside == []
    assert errors == []

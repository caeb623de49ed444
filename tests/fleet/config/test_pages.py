"""The configuration screens, as a browser without scripts uses them (forms posted, pages
read): the list with drift, a push refused beside the document with the validator's message,
a safety change confirmed deliberately, a diff, a revert, a viewer turned away, a bulk change
previewed and applied."""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI

from fleet.models import Role
from fleet.registry import add_gateway, add_site
from tests.fleet.api_client import fleet_app, user

EXAMPLE = (Path(__file__).parents[3] / "gateway" / "examples" / "community.toml").read_text()
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def document(gateway: str, limit_w: int = 5000) -> str:
    text = EXAMPLE.replace('site = "lianhua-garden"', 'site = "s1"')
    text = text.replace('id = "gw-01"', f'id = "{gateway}"')
    return text.replace("limit_w = 5000", f"limit_w = {limit_w}")


async def post(browser: httpx.AsyncClient, url: str, **fields: str) -> httpx.Response:
    return await browser.post(url, content=urlencode(fields), headers=FORM)


async def register(app: FastAPI, *gateways: str) -> None:
    async with app.state.sessions() as session:
        await add_site(session, "s1", "")
        for gw in gateways:
            await add_gateway(session, "s1", gw)
        await session.commit()


def text(response: httpx.Response) -> str:
    return html.unescape(response.text)


async def test_push_refuse_confirm_diff_revert_on_the_pages(tmp_path: Path) -> None:
    async with fleet_app(f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}") as app:
        await register(app, "gw-1", "gw-2")
        page = "/gateways/s1/gw-1/config"
        async with user(app, "olga", Role.OPERATOR) as op:
            listing = text(await op.get("/config"))
            assert "s1/gw-1" in listing
            assert "nothing desired yet" in listing

            typo = document("gw-1").replace("limit_w = 5000", "limit_ww = 5000")
            answer = await post(op, page, document=typo, comment="typo")
            assert answer.status_code == 422
            shown = text(answer)
            assert "Not stored, nothing sent:" in shown
            assert "safety.export_limit.limit_ww: unknown key" in shown
            assert "limit_ww = 5000" in shown  # the document is kept for the person to fix
            assert "No versions yet" in shown

            answer = await post(op, page, document=document("gw-1"), comment="first")
            assert answer.status_code == 303
            shown = text(await op.get(answer.headers["location"]))
            assert "version 1 is desired" in shown
            assert "drift: has not reported what it runs yet" in shown

            answer = await post(op, page, document=document("gw-1", 8000), comment="more export")
            assert answer.status_code == 409
            shown = text(answer)
            assert "This change weakens or removes a standard interlock" in shown
            assert "safety.export_limit.limit_w: raised from 5000 to 8000" in shown
            assert 'name="confirm_safety_change"' in shown
            answer = await post(
                op, page, document=document("gw-1", 8000), comment="more export",
                confirm_safety_change="yes",
            )  # fmt: skip
            assert answer.status_code == 303

            shown = text(await op.get(page + "?a=1&b=2"))
            assert "-limit_w = 5000" in shown
            assert "+limit_w = 8000" in shown
            assert "safety change" in shown

            answer = await post(op, page + "/revert", version="1")  # back to 5000 W: not weaker
            assert answer.status_code == 303
            shown = text(await op.get(answer.headers["location"]))
            assert "version 3 (the document of 1) is desired" in shown


async def test_a_weakening_revert_a_viewer_and_a_bulk_change(tmp_path: Path) -> None:
    async with fleet_app(f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}") as app:
        await register(app, "gw-1", "gw-2")
        page = "/gateways/s1/gw-1/config"
        async with user(app, "olga", Role.OPERATOR) as op, user(app, "vic", Role.VIEWER) as viewer:
            for gw in ("gw-1", "gw-2"):
                answer = await post(op, f"/gateways/s1/{gw}/config", document=document(gw, 6000))
                assert answer.status_code == 303
            await post(op, page, document=document("gw-1", 4000))
            answer = await post(op, page + "/revert", version="1")
            assert answer.status_code == 409  # 4000 → 6000 W: a safety change, to confirm
            assert "raised from 4000 to 6000" in text(answer)
            answer = await post(op, page + "/revert", version="1", confirm_safety_change="yes")
            assert answer.status_code == 303
            assert "version 3 (the document of 1) is desired" in text(
                await op.get(answer.headers["location"])
            )

            answer = await post(viewer, page, document=document("gw-1", 3000))
            assert answer.status_code == 403
            assert "needs the operator role; you are viewer" in text(answer)

            fragment = "[safety.export_limit]\nmax_step = 0.1\n"
            answer = await post(op, "/config/bulk", site="s1", fragment=fragment, action="preview")
            shown = text(answer)
            assert answer.status_code == 200
            assert "2 pass, 0 refused" in shown
            assert "+max_step = 0.1" in shown
            answer = await post(
                op, "/config/bulk", site="s1", fragment=fragment, action="apply", comment="bulk"
            )
            shown = text(answer)
            assert "version 4 is desired" in shown  # gw-1
            assert "version 2 is desired" in shown  # gw-2
            answer = await post(op, "/config/bulk", fragment=fragment, action="preview")
            assert answer.status_code == 422
            assert "select gateways by site, by tag or by name" in text(answer)

"""Two things a person reads differently since gap repair and shelving: a shelved alarm no
longer makes its site need a person on the overview (nor counts in /api/overview), and the
site page says which batches of a gateway were lost for good (the gateway no longer kept
them), in both languages."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fleet.models import Role
from fleet.registry import register_gateway
from gateway import wire
from gateway.wire.repair import RepairReport
from tests.fleet.api_client import fleet_app, raised, send, user
from tests.fleet.pages.test_pages import text

pytestmark = pytest.mark.fleet
SITE, GW = "north", "gw-1"


async def test_a_shelved_alarm_leaves_the_overviews_counts(tmp_path: Path) -> None:
    async with fleet_app(f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}") as app:
        async with app.state.sessions.begin() as session:
            await register_gateway(session, SITE, GW, "North Court")
        now = time.time()
        state = wire.State(status="online", version="1.0", started_at=now, at=now)
        await send(app, SITE, GW, state)
        fire = raised(1, "fire:loop", "critical", now)
        await send(app, SITE, GW, wire.EventBatch(seq=1, at=now, events=[fire]))
        async with user(app, "mark", Role.MAINTAINER) as b:
            before = text((await b.get("/")).text)
            assert "critical fire:loop raised" in before
            api = (await b.get("/api/overview")).json()
            assert api["sites"][0]["gateways"][0]["open_alarms"]["critical"] == 1
            [alarm] = (await b.get("/api/alarms")).json()
            shelf = {"minutes": 60, "reason": "loop sensor being replaced"}
            assert (await b.post(f"/api/alarms/{alarm['id']}/shelve", json=shelf)).is_success

            after = text((await b.get("/")).text)
            assert "fire:loop" not in after
            assert "Nothing needs a person" in after
            assert "1 site where all is well" in after
            summary = (await b.get("/api/overview")).json()["sites"][0]["gateways"][0]
            assert summary["open_alarms"]["critical"] == 0
            assert summary["unacked_alarms"] == 0
            # still there for whoever looks for it
            assert "fire:loop raised" in text((await b.get("/alarms?state=shelved")).text)


def _batch(seq: int, now: float) -> wire.TelemetryBatch:
    reading = wire.Reading(d="meter", p="w", v=float(seq), q="good", t=now)
    return wire.TelemetryBatch(seq=seq, at=now, readings=[reading])


async def test_the_site_page_names_the_batches_lost_for_good(tmp_path: Path) -> None:
    async with fleet_app(f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}") as app:
        async with app.state.sessions.begin() as session:
            await register_gateway(session, SITE, GW)
            await register_gateway(session, SITE, "gw-2")
        now = time.time()
        for seq in (1, 200):  # the broker dropped 2-199
            await send(app, SITE, GW, _batch(seq, now))
        async with user(app, "vera", Role.VIEWER) as b:
            assert "lost on" not in text((await b.get(f"/sites/{SITE}")).text)  # only open
            report = RepairReport(request=1, kind="telemetry", resent=0, lost=[(120, 180)])
            await send(app, SITE, GW, report)
            html = (await b.get(f"/sites/{SITE}?live=1")).text
            gateway = text(html[html.index(f'data-gateway="{GW}"') :].split("</section>")[0])
            assert "Readings of batches 120–180 lost on " in gateway
            assert ": the gateway no longer kept them" in gateway
            assert "2–119" not in gateway  # still open: the gateway may send them yet
            other = text(html[html.index('data-gateway="gw-2"') :].split("</section>")[0])
            assert "lost" not in other
            await b.post(
                "/language",
                content="lang=zh-Hans&next=/",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            chinese = text((await b.get(f"/sites/{SITE}")).text)
            assert "读数批次 120–180 于 " in chinese
            assert " 丢失：网关已不再保存" in chinese

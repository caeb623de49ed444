"""Configuration versions through the API, the real ingest routes and the database (SQLite and
PostgreSQL): pushes validated like ``gateway check``, safety changes confirmed deliberately,
history, diff, revert, desired vs reported with drift, and bulk changes."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from fleet.config.delivery import Delivery
from fleet.models import AuditEntry, Role
from fleet.registry import add_gateway, add_site
from gateway import wire
from gateway.wire.config import ConfigRequest, DesiredConfig, ReportedConfig, document_hash
from tests.fleet.api_client import fleet_app, send, user

EXAMPLE = (Path(__file__).parents[3] / "gateway" / "examples" / "community.toml").read_text()
CHARGER_4 = '[[devices]]\nname = "charger-4"\nprofile = "EVSE-HEC"\nbus = "carport"\nunit_id = 4\n'
assert CHARGER_4 in EXAMPLE


def document(site: str, gateway: str, limit_w: int = 5000) -> str:
    text = EXAMPLE.replace('site = "lianhua-garden"', f'site = "{site}"').replace(
        'id = "gw-01"', f'id = "{gateway}"'
    )
    return text.replace("limit_w = 5000", f"limit_w = {limit_w}")


async def register(app: FastAPI, site: str, *gateways: str) -> None:
    async with app.state.sessions() as session:
        await add_site(session, site, "")
        for gw in gateways:
            await add_gateway(session, site, gw)
        await session.commit()


async def push(browser: httpx.AsyncClient, gw: str, text: str, **extra: object) -> httpx.Response:
    return await browser.post(
        f"/api/gateways/s1/{gw}/config/versions",
        json={"document": text, "comment": "test", **extra},
    )


class Outbox:
    """What the fleet publishes, in place of the broker."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, wire.Kind, bytes, bool]] = []
        self.up = True

    async def send(
        self, site: str, gateway: str, kind: wire.Kind, payload: bytes, *, retain: bool = False
    ) -> bool:
        if self.up:
            self.sent.append((site, gateway, kind, payload, retain))
        return self.up


async def test_push_history_diff_revert_and_reported_state(fleet_db_url: str) -> None:
    async with fleet_app(fleet_db_url) as app:
        await register(app, "s1", "gw-1")
        async with user(app, "olga", Role.OPERATOR) as op, user(app, "vic", Role.VIEWER) as viewer:
            # a typo is refused with gateway check's message naming the key; nothing stored
            typo = document("s1", "gw-1").replace("limit_w = 5000", "limit_ww = 5000")
            answer = await push(op, "gw-1", typo)
            assert answer.status_code == 422
            assert "safety.export_limit.limit_ww: unknown key" in answer.json()["detail"]
            assert (await op.get("/api/gateways/s1/gw-1/config/versions")).json() == []
            # a document for another gateway is refused too
            answer = await push(op, "gw-1", document("s1", "gw-2"))
            assert answer.status_code == 422
            assert "s1/gw-2" in answer.json()["detail"]
            # a viewer cannot push
            assert (await push(viewer, "gw-1", document("s1", "gw-1"))).status_code == 403

            assert (await push(op, "gw-1", document("s1", "gw-1"))).status_code == 201
            # raising the export limit weakens I2: refused until confirmed
            answer = await push(op, "gw-1", document("s1", "gw-1", 8000))
            assert answer.status_code == 409
            assert (
                "safety.export_limit.limit_w: raised from 5000 to 8000" in answer.json()["detail"]
            )
            answer = await push(
                op, "gw-1", document("s1", "gw-1", 8000), confirm_safety_change=True
            )
            assert answer.status_code == 201
            assert answer.json()["safety_change"] is True
            assert answer.json()["number"] == 2

            history = (await viewer.get("/api/gateways/s1/gw-1/config/versions")).json()
            assert [(v["number"], v["desired"]) for v in history] == [(2, True), (1, False)]
            diff = (await viewer.get("/api/gateways/s1/gw-1/config/diff?a=1&b=2")).json()["diff"]
            assert "-limit_w = 5000" in diff
            assert "+limit_w = 8000" in diff

            answer = await op.post("/api/gateways/s1/gw-1/config/revert", json={"version": 1})
            assert answer.status_code == 201
            assert answer.json()["number"] == 3
            shown = (await viewer.get("/api/gateways/s1/gw-1/config/versions/3")).json()
            assert shown["document"] == document("s1", "gw-1")

        async with app.state.sessions() as session:
            actions = list(await session.scalars(select(AuditEntry.action)))
        assert actions.count("config.push") == 2
        assert "config.safety-confirmed" in actions
        assert "config.revert" in actions

        # delivery: the desired version goes out retained, once, and again when asked
        outbox = Outbox()
        delivery = Delivery(app.state.sessions, outbox)  # type: ignore[arg-type]
        outbox.up = False
        assert await delivery.round() == 0  # the broker away: nothing marked sent
        outbox.up = True
        assert await delivery.round() == 1
        assert await delivery.round() == 0
        site, gw, kind, payload, retain = outbox.sent[-1]
        desired = wire.decode(DesiredConfig, payload)
        assert (site, gw, kind, retain) == ("s1", "gw-1", wire.Kind.CONFIG_DESIRED, True)
        assert desired.version == 3
        assert desired.sha256 == document_hash(desired.document)
        await send(app, "s1", "gw-1", ConfigRequest(version=1, sha256="0" * 64, at=time.time()))
        assert await delivery.round() == 1  # asked after a reconnect: sent again

        async with user(app, "vera", Role.VIEWER) as viewer:
            state = (await viewer.get("/api/gateways/s1/gw-1/config")).json()
            assert state["drift"] is True
            assert "not reported" in state["drift_reason"]
            await send(app, "s1", "gw-1", reported(3, desired.sha256, "applied", 3))
            state = (await viewer.get("/api/gateways/s1/gw-1/config")).json()
            assert (state["drift"], state["status"], state["reported_version"]) == (
                False,
                "applied",
                3,
            )
            # edited on the gateway: a local version, flagged
            await send(app, "s1", "gw-1", reported(None, "a" * 64, "applied", None))
            state = (await viewer.get("/api/gateways/s1/gw-1/config")).json()
            assert state["drift"] is True
            assert "local" in state["drift_reason"]
            await send(
                app, "s1", "gw-1", reported(2, "b" * 64, "rolled back", 3, reason="bus 'x' silent")
            )
            state = (await viewer.get("/api/gateways/s1/gw-1/config")).json()
            assert state["drift"] is True
            assert "rolled back: bus 'x' silent" in state["drift_reason"]


def reported(
    version: int | None, sha: str, status: str, about: int | None, reason: str = ""
) -> ReportedConfig:
    return ReportedConfig(
        version=version,
        sha256=sha,
        status=status,
        about=about,
        reason=reason,
        at=time.time(),
    )


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}"


async def test_a_bulk_change_over_50_gateways_with_one_refusal_naming_gateway_and_key(
    sqlite_url: str,
) -> None:
    names = [f"gw-{i:02d}" for i in range(50)]
    async with fleet_app(sqlite_url) as app:
        await register(app, "s1", *names)
        async with user(app, "olga", Role.OPERATOR) as op:
            for name in names:
                text = document("s1", name)
                if name == "gw-17":  # has no charger-4: the fragment would add half a device
                    text = text.replace(CHARGER_4, "")
                assert (await push(op, name, text)).status_code == 201, name
            await op.put("/api/gateways/s1/gw-03/config/tags", json={"tags": ["pilot"]})
            fragment = (
                "[safety.export_limit]\nmax_step = 0.1\n\n"
                '[[devices]]\nname = "charger-4"\nmin_gap_ms = 20\n'
            )
            # a selection by tag previews one gateway
            answer = await op.post(
                "/api/config/bulk/preview", json={"tag": "pilot", "fragment": fragment}
            )
            lines = answer.json()
            assert [line["gateway"] for line in lines] == ["s1/gw-03"]
            assert "+max_step = 0.1" in lines[0]["diff"]
            assert lines[0]["problems"] == []

            answer = await op.post(
                "/api/config/bulk",
                json={"site": "s1", "fragment": fragment, "comment": "slower curtailment"},
            )
            assert answer.status_code == 200, answer.text
            result = answer.json()
            assert (result["applied"], result["refused"]) == (49, 1)
            refused = [line for line in result["lines"] if line["problems"]]
            assert refused[0]["gateway"] == "s1/gw-17"
            assert any(
                p.startswith("s1/gw-17: devices[") and ".profile: required key is missing" in p
                for p in refused[0]["problems"]
            ), refused[0]["problems"]
            history = (await op.get("/api/gateways/s1/gw-05/config/versions")).json()
            assert next((v["number"], v["origin"], v["desired"]) for v in history) == (
                2,
                "bulk",
                True,
            )
            shown = (await op.get("/api/gateways/s1/gw-05/config/versions/2")).json()["document"]
            assert "max_step = 0.1" in shown
            assert "min_gap_ms = 20" in shown
            assert len((await op.get("/api/gateways/s1/gw-17/config/versions")).json()) == 1

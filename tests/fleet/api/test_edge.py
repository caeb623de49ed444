"""The web edge as an attacker meets it: each test sends what an attacker would and asserts
what they observe (status, headers) and what the database holds afterwards."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from fleet.api.edge import CSP
from fleet.cli.serve import server_config
from fleet.core.settings import DATA_DIR_ENV, Settings, default_database_url
from fleet.models import AuditEntry, Role, Site
from tests.fleet.api_client import BASE, PASSWORD, add_user, client, fleet_app, user

pytestmark = pytest.mark.fleet


async def _sites(app: object) -> int:
    async with app.state.sessions() as session:  # type: ignore[attr-defined]
        return int(await session.scalar(select(func.count(Site.id))) or 0)


async def test_a_huge_body_is_refused_before_it_is_read(tmp_path: Path) -> None:
    read = []

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(100):  # 100 MB, if anyone read it all
            read.append(1)
            yield b"x" * 1_000_000

    async with (
        fleet_app(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}") as app,
        client(app) as stranger,
    ):
        declared = await stranger.post(
            "/api/login",
            content=endless(),
            headers={"content-length": str(100 * 1_000_000), "content-type": "application/json"},
        )
        assert declared.status_code == 413
        assert read == [] or len(read) <= 1  # the declared length was enough
        read.clear()
        streamed = await stranger.post(
            "/api/login", content=endless(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        assert len(read) <= 3  # refused once past the 1 MiB limit, not at the end
        assert "1048576 bytes" in streamed.json()["detail"]


async def test_a_422_does_not_echo_a_large_body(tmp_path: Path) -> None:
    async with (
        fleet_app(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}") as app,
        user(app, "root", Role.ADMIN) as admin,
    ):
        answer = await admin.post("/api/sites", json={"name": "n" * 500_000})
        assert answer.status_code == 422
        assert len(answer.content) < 2_000
        assert "n" * 100 not in answer.text
        assert "expected lower-case letters" in answer.text
        assert await _sites(app) == 0


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe{\x00}\x00",  # UTF-16
        b'{"name": "ada\xc3", "password": "x"}',  # broken UTF-8
        b'{"name": "ada\\ud800", "password": "xxxxxxxxxxxx"}',  # lone surrogate
        b'{"name": "ada", "password": "\\udfff\\udfff\\udfff\\udfff"}',
        b"[" * 100_000,  # deep nesting
        b"{",
    ],
)
async def test_an_undecodable_json_body_is_a_4xx_never_a_500(tmp_path: Path, body: bytes) -> None:
    async with fleet_app(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}") as app, client(app) as anon:
        await add_user(app, "ada", Role.ADMIN)
        answer = await anon.post(
            "/api/login", content=body, headers={"content-type": "application/json"}
        )
        assert 400 <= answer.status_code < 500, answer.text
        assert "set-cookie" not in answer.headers
        async with app.state.sessions() as session:
            assert await session.scalar(select(func.count(AuditEntry.id))) == 0


async def test_every_answer_carries_the_security_headers(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'f.db'}"
    async with fleet_app(url) as app, client(app) as anon:
        for path in ("/", "/api/me", "/no/such/page", "/static/nothing.js"):
            answer = await anon.get(path)
            assert answer.headers["content-security-policy"] == CSP, path
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["x-frame-options"] == "DENY"
            assert answer.headers["referrer-policy"] == "same-origin"
            assert "strict-transport-security" not in answer.headers  # plain HTTP
        script = next(p for p in CSP.split(";") if p.strip().startswith("script-src"))
        assert "unsafe-inline" not in script
        assert "frame-ancestors 'none'" in CSP
        tls = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://fleet.test"
        )
        async with tls:
            assert (await tls.get("/api/me")).headers["strict-transport-security"]


async def test_a_cross_site_change_with_the_login_cookie_is_refused(tmp_path: Path) -> None:
    async with (
        fleet_app(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}") as app,
        user(app, "root", Role.ADMIN) as admin,
    ):
        evil = await admin.post(
            "/api/sites", json={"name": "evil"}, headers={"origin": "https://evil.example"}
        )
        fetched = await admin.post(
            "/api/sites", json={"name": "evil"}, headers={"sec-fetch-site": "cross-site"}
        )
        sibling = await admin.post(
            "/api/sites", json={"name": "evil"}, headers={"sec-fetch-site": "same-site"}
        )
        assert [a.status_code for a in (evil, fetched, sibling)] == [403, 403, 403]
        assert await _sites(app) == 0
        ours = await admin.post(
            "/api/sites",
            json={"name": "north"},
            headers={"origin": BASE, "sec-fetch-site": "same-origin"},
        )
        assert ours.status_code == 201
        assert await _sites(app) == 1


@pytest.mark.parametrize(("setting", "anonymous"), [("login", 401), ("off", 404), ("public", 200)])
async def test_the_api_docs_need_a_login(tmp_path: Path, setting: str, anonymous: int) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'f.db'}"
    async with fleet_app(url, api_docs=setting) as app, client(app) as anon:
        assert (await anon.get("/openapi.json")).status_code == anonymous
        assert (await anon.get("/docs")).status_code == anonymous
        browsing = await anon.get("/docs", headers={"accept": "text/html,*/*"})
        if setting == "login":  # a person in a browser is sent to log in, and back
            assert browsing.status_code == 303
            assert browsing.headers["location"] == "/login?next=%2Fdocs"
        else:
            assert browsing.status_code == anonymous
        async with user(app, "root", Role.VIEWER) as viewer:
            expected = 404 if setting == "off" else 200
            assert (await viewer.get("/openapi.json")).status_code == expected


def test_forwarded_headers_are_believed_only_from_configured_proxies() -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not called")

    plain = server_config(app, Settings(database_url="sqlite://"), "127.0.0.1", 8080)
    plain.load()
    assert not plain.proxy_headers
    assert type(plain.loaded_app).__name__ != "ProxyHeadersMiddleware"
    proxied = Settings(database_url="sqlite://", trusted_proxies=("10.0.0.5",))
    behind = server_config(app, proxied, "127.0.0.1", 8080)
    behind.load()
    assert behind.proxy_headers
    assert behind.forwarded_allow_ips == ["10.0.0.5"]


async def test_a_strangers_wrong_passwords_do_not_lock_the_user_out(tmp_path: Path) -> None:
    limits = {"login_failures_per_name": 3, "login_failure_window": timedelta(minutes=5)}
    async with fleet_app(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}", **limits) as app:
        await add_user(app, "ada", Role.OPERATOR)
        elsewhere = httpx.ASGITransport(app=app, client=("192.0.2.7", 4242))
        async with httpx.AsyncClient(transport=elsewhere, base_url=BASE) as attacker:
            guesses = [
                await attacker.post("/api/login", json={"name": "ada", "password": "x" * 20})
                for _ in range(5)
            ]
            right = await attacker.post("/api/login", json={"name": "ada", "password": PASSWORD})
        assert [g.status_code for g in guesses] == [401, 401, 401, 429, 429]
        assert right.status_code == 429  # the attacker is slowed down, even when right
        async with client(app) as ada:  # ada, from her own address
            mine = await ada.post("/api/login", json={"name": "ada", "password": PASSWORD})
        assert mine.status_code == 200


def test_the_default_database_is_readable_by_its_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "fleet-data"
    monkeypatch.setenv(DATA_DIR_ENV, str(directory))
    url = default_database_url()
    assert url.endswith(str(directory / "fleet.db"))
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "fleet.db").stat().st_mode) == 0o600


async def test_a_422_of_the_request_model_quotes_little(tmp_path: Path) -> None:
    async with fleet_app(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}") as app, client(app) as anon:
        answer = await anon.post("/api/login", json={"name": "a" * 900_000, "password": "x"})
        assert answer.status_code == 422
        assert len(answer.content) < 1_000
        assert answer.json()["detail"][0]["loc"] == ["body", "name"]

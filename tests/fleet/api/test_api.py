"""The fleet REST API on SQLite and PostgreSQL: logging in, what gateways sent as the overview,
a site, a history plot and the alarm list show it, history downsampling, the audit log."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select

from fleet.accounts.credentials import digest
from fleet.errors import LOGIN_FAILED
from fleet.models import Device, LoginSession, Role, Sample
from fleet.queries.history import RAW_SPAN
from fleet.registry import register_gateway
from gateway import wire
from tests.fleet.api_client import PASSWORD, add_user, client, fleet_app, login, raised, send, user

pytestmark = pytest.mark.fleet


async def test_login_me_logout(fleet_db_url: str) -> None:
    async with fleet_app(fleet_db_url) as app, client(app) as browser:
        await add_user(app, "ada", Role.OPERATOR)
        assert (await browser.get("/api/me")).json() == {"detail": "not logged in"}

        answer = await browser.post("/api/login", json={"name": "ada", "password": PASSWORD})
        assert answer.json() == {"name": "ada", "role": "operator"}
        cookie = answer.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert "max-age=43200" in cookie
        me = await browser.get("/api/me")
        assert me.json() == {"name": "ada", "role": "operator"}

        secret = browser.cookies["doorstep_session"]
        async with app.state.sessions() as session:
            stored = (await session.scalars(select(LoginSession.token_hash))).all()
        assert stored == [digest(secret)]  # never the secret itself

        assert (await browser.post("/api/logout")).status_code == 204
        browser.cookies.set("doorstep_session", secret)  # a stolen copy is dead too
        assert (await browser.get("/api/me")).status_code == 401


async def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(fleet_db_url: str) -> None:
    async with fleet_app(fleet_db_url) as app, client(app) as browser:
        await add_user(app, "ada", Role.ADMIN)
        wrong = await browser.post("/api/login", json={"name": "ada", "password": "x" * 20})
        nobody = await browser.post("/api/login", json={"name": "bob", "password": PASSWORD})
        assert wrong.status_code == nobody.status_code == 401
        assert wrong.json() == nobody.json() == {"detail": LOGIN_FAILED}
        assert "set-cookie" not in wrong.headers
        assert (await browser.get("/api/me")).status_code == 401


@dataclass(frozen=True)
class Fleet:
    """A site whose gateway gw-1 reported state, telemetry, alarms and health; gw-2 is silent."""

    app: FastAPI
    now: float


async def north(app: FastAPI) -> Fleet:
    now = float(int(time.time()))  # whole seconds: bucket boundaries fall where expected
    async with user(app, "root", Role.ADMIN) as admin:
        assert (await admin.post("/api/sites", json={"name": "north", "title": "North"})).is_success
        for gw in ("gw-1", "gw-2"):
            assert (await admin.post("/api/sites/north/gateways", json={"name": gw})).is_success
    devices = {"charger-1": "EVSE-HEC", "meter": "EM-3"}
    state = wire.State(
        status="online", version="1.4.0", started_at=now - 100, at=now, devices=devices
    )
    await send(app, "north", "gw-1", state)
    readings = [
        wire.Reading(d="charger-1", p="power", v=7.25, q="good", t=now - 30),
        wire.Reading(d="charger-1", p="status", v="charging", q="good", t=now - 30),
        wire.Reading(d="meter", p="energy", v=100, q="stale", t=now - 30),
    ]
    await send(app, "north", "gw-1", wire.TelemetryBatch(seq=1, at=now - 29, readings=readings))
    later = [wire.Reading(d="charger-1", p="power", v=11.0, q="good", t=now - 10)]
    await send(app, "north", "gw-1", wire.TelemetryBatch(seq=2, at=now - 9, readings=later))
    alarms = [
        raised(1, "door", "minor", now - 50),
        raised(2, "fire", "critical", now - 40, device="charger-1"),
        raised(3, "export", "major", now - 20),
    ]
    await send(app, "north", "gw-1", wire.EventBatch(seq=1, at=now - 19, events=alarms))
    cleared = raised(4, "door", "minor", now - 5).model_copy(update={"kind": "cleared"})
    await send(app, "north", "gw-1", wire.EventBatch(seq=2, at=now - 4, events=[cleared]))
    health = wire.Health(
        at=now, uptime_s=100, version="1.4.0", cpu_percent=3.5, memory_mib=80,
        disk_free_mib=900, outbox_depth=3, outbox_dropped=0,
    )  # fmt: skip
    await send(app, "north", "gw-1", health)
    return Fleet(app, now)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


async def test_overview_site_history_and_alarms_show_what_the_gateway_sent(
    fleet_db_url: str,
) -> None:
    async with fleet_app(fleet_db_url) as app:
        fleet = await north(app)
        now = fleet.now
        async with login(app, "root") as admin:
            overview = (await admin.get("/api/overview")).json()
            site = (await admin.get("/api/sites/north")).json()
            history = await admin.get(
                "/api/history",
                params={
                    "site": "north", "gateway": "gw-1", "device": "charger-1", "point": "power",
                    "since": iso(now - 60), "until": iso(now), "buckets": 60,
                },
            )  # fmt: skip
            open_alarms = (await admin.get("/api/alarms")).json()
            every_alarm = (await admin.get("/api/alarms", params={"state": "all"})).json()
            sites = (await admin.get("/api/sites")).json()

    assert sites == [{"name": "north", "title": "North", "gateways": 2}]
    [north_site] = overview["sites"]
    gw1, gw2 = north_site["gateways"]
    assert gw1 == {
        "site": "north", "name": "gw-1", "online": True, "last_seen": gw1["last_seen"],
        "version": "1.4.0", "open_alarms": {"critical": 1, "major": 1, "minor": 0, "info": 0},
        "unacked_alarms": 3, "outbox_depth": 3, "devices": 2,
    }  # fmt: skip
    assert gw1["last_seen"] is not None
    assert (gw2["online"], gw2["last_seen"], gw2["devices"], gw2["outbox_depth"]) == (
        False, None, 0, None,
    )  # fmt: skip

    detail = site["gateways"][0]
    assert detail["health"]["outbox_depth"] == 3
    devices = {d["name"]: d for d in detail["devices"]}
    assert devices["charger-1"]["model"] == "EVSE-HEC"
    assert devices["charger-1"]["points"]["power"] == {
        "value": 11.0, "quality": "good", "at": iso(now - 10),
    }  # fmt: skip
    assert devices["charger-1"]["points"]["status"]["value"] == "charging"
    assert devices["meter"]["points"]["energy"] == {
        "value": 100, "quality": "stale", "at": iso(now - 30),
    }  # fmt: skip

    assert history.status_code == 200, history.text
    assert history.json()["bucket_seconds"] == 1.0
    assert history.json()["series"] == [
        {"t": iso(now - 30), "min": 7.25, "max": 7.25, "avg": 7.25, "n": 1},
        {"t": iso(now - 10), "min": 11.0, "max": 11.0, "avg": 11.0, "n": 1},
    ]

    assert [(a["key"], a["severity"]) for a in open_alarms] == [
        ("fire", "critical"), ("export", "major"),
    ]  # fmt: skip
    assert [a["key"] for a in every_alarm] == ["export", "fire", "door"]  # newest first
    fire = open_alarms[0]
    assert (fire["site"], fire["gateway"], fire["device"], fire["values"]) == (
        "north", "gw-1", "charger-1", {"t": 21.5},
    )  # fmt: skip
    assert every_alarm[2]["cleared_at"] == iso(now - 5)


async def test_acknowledging_an_alarm_counts_once(fleet_db_url: str) -> None:
    async with fleet_app(fleet_db_url) as app:
        await north(app)
        async with login(app, "root") as admin:
            [fire] = [a for a in (await admin.get("/api/alarms")).json() if a["key"] == "fire"]
            first = (await admin.post(f"/api/alarms/{fire['id']}/ack")).json()
            again = (await admin.post(f"/api/alarms/{fire['id']}/ack")).json()
            unacked = (await admin.get("/api/alarms", params={"state": "unacked"})).json()
            overview = (await admin.get("/api/overview")).json()
            acks = [e for e in (await admin.get("/api/audit")).json() if e["action"] == "alarm.ack"]
            missing = await admin.post("/api/alarms/999999/ack")
    assert first["acked_by"] == "root"
    assert first["acked_at"] is not None
    assert again == first  # the first acknowledgement stands
    assert [a["key"] for a in unacked] == ["export", "door"]
    assert overview["sites"][0]["gateways"][0]["unacked_alarms"] == 2
    assert [(e["actor"], e["target"]) for e in acks] == [("user:root", f"alarm:{fire['id']}")]
    assert missing.status_code == 404


async def test_history_refuses_what_it_cannot_answer(fleet_db_url: str) -> None:
    async with fleet_app(fleet_db_url) as app:
        await north(app)
        point = {"site": "north", "gateway": "gw-1", "device": "charger-1", "point": "power"}
        async with login(app, "root") as admin:
            naive = await admin.get("/api/history", params={**point, "since": "2025-01-01T00:00"})
            backwards = await admin.get(
                "/api/history",
                params={**point, "since": "2025-01-02T00:00Z", "until": "2025-01-01T00:00Z"},
            )
            zero = await admin.get("/api/history", params={**point, "buckets": 0})
            unknown = await admin.get("/api/history", params={**point, "device": "lift"})
            default = await admin.get("/api/history", params=point)
    assert naive.status_code == 422
    assert naive.json()["detail"].startswith("since: expected an ISO 8601 time with a zone")
    assert backwards.status_code == 422
    assert "must be before until" in backwards.json()["detail"]
    assert zero.status_code == 422
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "no device 'lift' on gateway north/gw-1"}
    doc = default.json()  # the last hour
    span = datetime.fromisoformat(doc["until"]) - datetime.fromisoformat(doc["since"])
    assert span == timedelta(hours=1)
    assert sum(b["n"] for b in doc["series"]) == 2


SINCE = datetime(2025, 3, 1, 0, 0, 0, 123457, tzinfo=UTC)


@st.composite
def windows(draw: st.DrawFn) -> tuple[int, int, list[tuple[int, float | None]]]:
    """A window of ``span`` µs, a bucket count, and samples (µs after SINCE, number or None
    for a non-numeric reading), some before and after the window. Up to RAW_SPAN: longer
    spans read the rollups (tests/fleet/queries/test_history_resolution.py)."""
    span = draw(st.integers(1, RAW_SPAN // timedelta(microseconds=1)))
    buckets = draw(st.integers(1, 60))
    offset = st.one_of(st.integers(0, span - 1), st.sampled_from([-1, span, span + 7]))
    value = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False), st.integers(-99, 99))
    samples = draw(st.lists(st.tuples(offset, value), max_size=40))
    return span, buckets, samples


def test_history_buckets_hold_each_sample_once_with_its_min_max_avg(fleet_db_url: str) -> None:
    names = (f"p{i}" for i in itertools.count())
    with asyncio.Runner() as runner:
        stack = AsyncExitStack()
        app = runner.run(stack.enter_async_context(fleet_app(fleet_db_url)))
        device = runner.run(_one_device(app))
        admin = runner.run(stack.enter_async_context(user(app, "root", Role.ADMIN)))

        @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(windows())
        def check(window: tuple[int, int, list[tuple[int, float | None]]]) -> None:
            span, buckets, samples = window
            point = next(names)
            runner.run(_store(app, device, point, samples))
            answer = runner.run(
                admin.get(
                    "/api/history",
                    params={
                        "site": "s",
                        "gateway": "g",
                        "device": "d",
                        "point": point,
                        "since": SINCE.isoformat(),
                        "until": (SINCE + timedelta(microseconds=span)).isoformat(),
                        "buckets": buckets,
                    },
                )
            )
            assert answer.status_code == 200, answer.text
            series = answer.json()["series"]
            expected = _reference(span, buckets, samples)
            assert len(series) <= buckets
            assert sum(b["n"] for b in series) == sum(len(v) for v in expected.values())
            got = {datetime.fromisoformat(b["t"]): b for b in series}
            assert list(got) == sorted(expected)
            for start, values in expected.items():
                bucket = got[start]
                assert (bucket["min"], bucket["max"], bucket["n"]) == (
                    min(values), max(values), len(values),
                )  # fmt: skip
                assert bucket["avg"] == pytest.approx(sum(values) / len(values), rel=1e-9, abs=1e-9)

        try:
            check()
        finally:
            runner.run(stack.aclose())


def _reference(
    span: int, buckets: int, samples: list[tuple[int, float | None]]
) -> dict[datetime, list[float]]:
    width = -(-span // buckets)
    found: dict[datetime, list[float]] = {}
    for offset, value in samples:
        if 0 <= offset < span and value is not None:
            start = SINCE + timedelta(microseconds=offset // width * width)
            found.setdefault(start, []).append(float(value))
    return found


async def _one_device(app: FastAPI) -> int:
    async with app.state.sessions() as session:
        gateway = await register_gateway(session, "s", "g")
        device = Device(gateway_id=gateway.id, name="d")
        session.add(device)
        await session.commit()
        return device.id


async def _store(
    app: FastAPI, device: int, point: str, samples: list[tuple[int, float | None]]
) -> None:
    async with app.state.sessions() as session:
        session.add_all(
            Sample(
                device_id=device,
                point=point,
                at=SINCE + timedelta(microseconds=offset),
                value=value if value is not None else "text",
                num=value,
                quality="good",
            )
            for offset, value in samples
        )
        await session.commit()


async def test_every_change_is_in_the_audit_log_with_actor_and_target(fleet_db_url: str) -> None:
    async with fleet_app(fleet_db_url) as app, user(app, "root", Role.ADMIN) as admin:
        await admin.post("/api/sites", json={"name": "east", "title": "East"})
        await admin.post("/api/sites/east/gateways", json={"name": "gw-9"})
        await admin.post(
            "/api/users", json={"name": "mo", "role": "maintainer", "password": PASSWORD}
        )
        token = (await admin.post("/api/tokens", json={"name": "ci", "role": "viewer"})).json()
        await admin.delete(f"/api/tokens/{token['id']}")
        async with login(app, "mo") as mo:
            await mo.get("/api/me")
        log = (await admin.get("/api/audit")).json()
    assert [(e["actor"], e["action"], e["target"]) for e in log] == [
        ("user:mo", "session.login", "user:mo"),
        ("user:root", "token.revoke", f"token:{token['id']}"),
        ("user:root", "token.create", f"token:{token['id']}"),
        ("user:root", "user.create", "user:mo"),
        ("user:root", "gateway.create", "gateway:east/gw-9"),
        ("user:root", "site.create", "site:east"),
        ("user:root", "session.login", "user:root"),
    ]
    assert log[3]["detail"] == {"role": "maintainer"}
    assert all(datetime.fromisoformat(e["at"]).tzinfo is not None for e in log)


async def test_registering_refuses_duplicates_and_bad_names(fleet_db_url: str) -> None:
    async with fleet_app(fleet_db_url) as app, user(app, "root", Role.ADMIN) as admin:
        assert (await admin.post("/api/sites", json={"name": "east"})).status_code == 201
        again = await admin.post("/api/sites", json={"name": "east"})
        upper = await admin.post("/api/sites", json={"name": "East"})
        nowhere = await admin.post("/api/sites/west/gateways", json={"name": "gw-1"})
        missing = await admin.get("/api/sites/west")
    assert (again.status_code, again.json()) == (409, {"detail": "site 'east' exists already"})
    assert upper.status_code == 422
    assert "site name 'East'" in upper.json()["detail"]
    assert (nowhere.status_code, missing.status_code) == (404, 404)


@contextmanager
def a_rival_inserts_first(app: FastAPI, table: str) -> Iterator[None]:
    """The next INSERT into ``table`` is run first on another connection and committed, as
    if a second request had registered the same name between the check and the insert."""
    engine = app.state.sessions.kw["bind"].sync_engine
    done = False

    def rival(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool
    ) -> None:
        nonlocal done
        if done or not statement.startswith(f"INSERT INTO {table} "):
            return
        done = True
        with engine.connect() as other:
            other.exec_driver_sql(statement, parameters)
            other.commit()

    event.listen(engine, "before_cursor_execute", rival)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", rival)
    assert done, f"nothing was inserted into {table}"


async def test_a_name_registered_by_someone_else_meanwhile_is_a_conflict(
    fleet_db_url: str,
) -> None:
    async with fleet_app(fleet_db_url) as app, user(app, "root", Role.ADMIN) as admin:
        with a_rival_inserts_first(app, "sites"):
            site = await admin.post("/api/sites", json={"name": "east"})
        with a_rival_inserts_first(app, "gateways"):
            gateway = await admin.post("/api/sites/east/gateways", json={"name": "gw-1"})
        sites = (await admin.get("/api/sites")).json()
        actions = [e["action"] for e in (await admin.get("/api/audit")).json()]
    assert (site.status_code, site.json()) == (409, {"detail": "site 'east' exists already"})
    assert (gateway.status_code, gateway.json()) == (
        409, {"detail": "gateway 'gw-1' of site 'east' exists already"},
    )  # fmt: skip
    assert sites == [{"name": "east", "title": "", "gateways": 1}]
    assert actions == ["session.login"]  # the refused registrations left no entry


async def test_the_web_ui_and_the_api_documentation_are_served(tmp_path: Path) -> None:
    async with fleet_app(f"sqlite:///{tmp_path / 'f.db'}") as app, client(app) as browser:
        index = await browser.get("/")
        login = await browser.get(index.headers["location"])
        async with user(app, "vic", Role.VIEWER) as viewer:  # the docs need a login
            docs = await viewer.get("/docs")
            schema: dict[str, Any] = (await viewer.get("/openapi.json")).json()
    assert index.status_code == 303  # the screens ask to log in first (tests/fleet/pages)
    assert login.status_code == 200
    assert 'id="login-form"' in login.text
    assert "/vendor/swagger-ui-" in docs.text  # the docs' assets come from the fleet itself
    overview = schema["paths"]["/api/overview"]["get"]["responses"]["200"]
    assert overview["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Overview"
    }
    assert {"GatewaySummary", "SiteDetail", "History", "AlarmView"} <= set(
        schema["components"]["schemas"]
    )


async def test_failed_logins_for_a_name_are_refused_for_a_while_known_name_or_not(
    fleet_db_url: str,
) -> None:
    window = {"login_failure_window": timedelta(seconds=1)}
    async with fleet_app(fleet_db_url, **window) as app, client(app) as browser:
        await add_user(app, "ada", Role.OPERATOR)

        async def log_in(name: str, password: str) -> httpx.Response:
            return await browser.post("/api/login", json={"name": name, "password": password})

        wrong = [await log_in("ada", "x" * 20) for _ in range(5)]
        right_too_soon = await log_in("ada", PASSWORD)
        unknown = [await log_in("nobody", "x" * 20) for _ in range(6)]
        await asyncio.sleep(1.1)  # the window since the last failure
        right_later = await log_in("ada", PASSWORD)
    assert [a.status_code for a in wrong] == [401] * 5
    assert (right_too_soon.status_code, right_too_soon.json()) == (
        429, {"detail": "too many failed logins for ada from 127.0.0.1; try again in 1 s"},
    )  # fmt: skip
    assert right_too_soon.headers["retry-after"] == "1"
    assert "set-cookie" not in right_too_soon.headers
    assert [a.status_code for a in unknown] == [401] * 5 + [429]
    assert unknown[-1].json() == {
        "detail": "too many failed logins for nobody from 127.0.0.1; try again in 1 s"
    }
    assert right_later.status_code == 200


async def test_failed_logins_from_one_address_are_refused_for_a_while(fleet_db_url: str) -> None:
    limits = {"login_failures_per_address": 3, "login_failure_window": timedelta(seconds=1)}
    async with fleet_app(fleet_db_url, **limits) as app:
        await add_user(app, "ada", Role.OPERATOR)
        elsewhere = httpx.ASGITransport(app=app, client=("192.0.2.7", 4242))
        async with httpx.AsyncClient(transport=elsewhere, base_url="http://fleet.test") as guesser:
            guesses = [
                await guesser.post("/api/login", json={"name": n, "password": "x" * 20})
                for n in ("a", "b", "c", "ada")
            ]
        async with login(app, "ada") as browser:  # from another address
            me = await browser.get("/api/me")
    assert [a.status_code for a in guesses] == [401, 401, 401, 429]
    assert guesses[-1].json() == {
        "detail": "too many failed logins from 192.0.2.7; try again in 1 s"
    }
    assert me.status_code == 200


async def test_more_logins_at_once_than_password_checks_all_succeed(fleet_db_url: str) -> None:
    async with fleet_app(fleet_db_url) as app:
        await add_user(app, "ada", Role.OPERATOR)

        async def one() -> int:
            async with client(app) as browser:
                answer = await browser.post(
                    "/api/login", json={"name": "ada", "password": PASSWORD}
                )
                return answer.status_code

        codes = await asyncio.gather(*(one() for _ in range(6)))
    assert codes == [200] * 6  # more than the 4 password checks at once

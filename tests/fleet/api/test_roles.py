"""Who may do what: roles by rank (viewer < maintainer < operator < admin), API tokens that act
with their own role and never above their owner's, revocation."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from fleet.accounts.credentials import digest
from fleet.errors import LOGIN_FAILED
from fleet.models import ApiToken, LoginSession, Role, User
from fleet.registry import register_gateway
from gateway import wire
from tests.fleet.api_client import PASSWORD, add_user, client, fleet_app, login, raised, send, user

pytestmark = pytest.mark.fleet

ACK_DENIED = "acknowledging alarms needs the maintainer role; you are viewer"


async def an_alarm(app: FastAPI) -> int:
    """A registered gateway that raised one alarm; its id."""
    async with app.state.sessions() as session:
        await register_gateway(session, "north", "gw-1")
        await session.commit()
    now = time.time()
    batch = wire.EventBatch(seq=1, at=now, events=[raised(1, "fire", "critical", now)])
    await send(app, "north", "gw-1", batch)
    async with user(app, "root", Role.ADMIN) as admin:
        [alarm] = (await admin.get("/api/alarms")).json()
    return int(alarm["id"])


async def test_a_viewer_cannot_acknowledge_but_a_maintainer_can(fleet_db_url: str) -> None:
    async with fleet_app(fleet_db_url) as app:
        alarm = await an_alarm(app)
        async with user(app, "vi", Role.VIEWER) as viewer:
            denied = await viewer.post(f"/api/alarms/{alarm}/ack")
            still = (await viewer.get("/api/alarms")).json()
        async with user(app, "ma", Role.MAINTAINER) as maintainer:
            acked = await maintainer.post(f"/api/alarms/{alarm}/ack")
    assert (denied.status_code, denied.json()) == (403, {"detail": ACK_DENIED})
    assert still[0]["acked_at"] is None
    assert acked.status_code == 200
    assert acked.json()["acked_by"] == "ma"


async def test_only_an_admin_creates_users_and_reads_the_audit_log(fleet_db_url: str) -> None:
    new = {"name": "newbie", "role": "viewer", "password": PASSWORD}
    async with fleet_app(fleet_db_url) as app:
        async with user(app, "op", Role.OPERATOR) as operator:
            create = await operator.post("/api/users", json=new)
            audit = await operator.get("/api/audit")
            listing = await operator.get("/api/users")
        async with user(app, "ma", Role.MAINTAINER) as maintainer:
            as_maintainer = await maintainer.post("/api/users", json=new)
        async with user(app, "root", Role.ADMIN) as admin:
            created = await admin.post("/api/users", json=new)
            users = (await admin.get("/api/users")).json()
    assert (create.status_code, create.json()) == (
        403, {"detail": "creating users needs the admin role; you are operator"},
    )  # fmt: skip
    assert as_maintainer.json() == {
        "detail": "creating users needs the admin role; you are maintainer"
    }
    assert audit.status_code == listing.status_code == 403
    assert created.status_code == 201
    assert [(u["name"], u["role"]) for u in users] == [
        ("ma", "maintainer"), ("newbie", "viewer"), ("op", "operator"), ("root", "admin"),
    ]  # fmt: skip


async def test_an_admin_cannot_make_a_weak_password_or_a_duplicate(fleet_db_url: str) -> None:
    async with fleet_app(fleet_db_url) as app, user(app, "root", Role.ADMIN) as admin:
        weak = await admin.post(
            "/api/users", json={"name": "x", "role": "viewer", "password": "short"}
        )
        dup = await admin.post(
            "/api/users", json={"name": "root", "role": "viewer", "password": PASSWORD}
        )
    assert (weak.status_code, weak.json()) == (
        422, {"detail": "password: at least 12 characters expected"},
    )  # fmt: skip
    assert (dup.status_code, dup.json()) == (409, {"detail": "user 'root' exists already"})


async def test_only_an_operator_registers_sites_and_gateways(fleet_db_url: str) -> None:
    async with fleet_app(fleet_db_url) as app:
        async with user(app, "ma", Role.MAINTAINER) as maintainer:
            denied = await maintainer.post("/api/sites", json={"name": "east"})
        async with user(app, "op", Role.OPERATOR) as operator:
            site = await operator.post("/api/sites", json={"name": "east"})
            gateway = await operator.post("/api/sites/east/gateways", json={"name": "gw-1"})
    assert denied.json() == {
        "detail": "registering sites and gateways needs the operator role; you are maintainer"
    }
    assert (site.status_code, gateway.status_code) == (201, 201)


async def test_a_viewer_token_of_an_admin_acts_as_a_viewer(fleet_db_url: str) -> None:
    async with fleet_app(fleet_db_url) as app:
        alarm = await an_alarm(app)
        async with login(app, "root") as admin:
            issued = await admin.post("/api/tokens", json={"name": "wallboard", "role": "viewer"})
        secret = issued.json()["token"]
        async with client(app, token=secret) as script:
            me = (await script.get("/api/me")).json()
            overview = await script.get("/api/overview")
            ack = await script.post(f"/api/alarms/{alarm}/ack")
            create = await script.post(
                "/api/users", json={"name": "evil", "role": "admin", "password": PASSWORD}
            )
            stronger = await script.post("/api/tokens", json={"name": "up", "role": "admin"})
        async with app.state.sessions() as session:
            stored = (await session.scalars(select(ApiToken.token_hash))).all()
    assert issued.status_code == 201
    assert me == {"name": "root", "role": "viewer"}
    assert overview.status_code == 200
    assert (ack.status_code, ack.json()) == (403, {"detail": ACK_DENIED})
    assert create.json() == {"detail": "creating users needs the admin role; you are viewer"}
    assert stronger.status_code == 403
    assert stored == [digest(secret)]  # only the hash is kept


async def test_a_token_cannot_have_a_role_above_its_owner(fleet_db_url: str) -> None:
    async with fleet_app(fleet_db_url) as app, user(app, "ma", Role.MAINTAINER) as maintainer:
        above = await maintainer.post("/api/tokens", json={"name": "x", "role": "operator"})
        equal = await maintainer.post("/api/tokens", json={"name": "y", "role": "maintainer"})
        mine = (await maintainer.get("/api/tokens")).json()
    assert above.status_code == 403
    assert above.json() == {
        "detail": "a token cannot have a role above its owner's: asked for operator, "
        "at most maintainer allowed"
    }
    assert equal.status_code == 201
    assert [(t["name"], t["role"]) for t in mine] == [("y", "maintainer")]


async def test_a_revoked_token_is_refused(fleet_db_url: str) -> None:
    async with fleet_app(fleet_db_url) as app, user(app, "op", Role.OPERATOR) as operator:
        issued = (
            await operator.post("/api/tokens", json={"name": "ci", "role": "operator"})
        ).json()
        async with client(app, token=issued["token"]) as script:
            before = await script.get("/api/overview")
            assert (await operator.delete(f"/api/tokens/{issued['id']}")).status_code == 204
            after = await script.get("/api/overview")
        async with client(app, token="dst_made-up") as guess:
            made_up = await guess.get("/api/overview")
        listed = (await operator.get("/api/tokens")).json()
    assert before.status_code == 200
    assert (after.status_code, after.json()) == (
        401,
        {"detail": "API token unknown, revoked or expired"},
    )
    assert made_up.status_code == 401
    assert listed[0]["revoked_at"] is not None


async def test_a_token_expires_after_its_lifetime_and_one_made_for_ever_does_not(
    fleet_db_url: str,
) -> None:
    async with fleet_app(fleet_db_url) as app, user(app, "op", Role.OPERATOR) as operator:
        default = (await operator.post("/api/tokens", json={"name": "ci", "role": "viewer"})).json()
        forever = (
            await operator.post(
                "/api/tokens", json={"name": "wall", "role": "viewer", "expires_in_days": None}
            )
        ).json()
        too_long = await operator.post(
            "/api/tokens", json={"name": "x", "role": "viewer", "expires_in_days": 4000}
        )
        async with app.state.sessions.begin() as session:  # 90 days pass for the default one
            token = await session.get(ApiToken, default["id"])
            token.expires_at = token.created_at - timedelta(seconds=1)
        async with client(app, token=default["token"]) as script:
            expired = await script.get("/api/overview")
        async with client(app, token=forever["token"]) as wallboard:
            kept = await wallboard.get("/api/overview")
        listed = {t["name"]: t for t in (await operator.get("/api/tokens")).json()}
    made = datetime.fromisoformat(default["expires_at"]) - datetime.fromisoformat(
        listed["ci"]["created_at"]
    )
    assert abs(made - timedelta(days=90)) < timedelta(minutes=1), "default lifetime"
    assert forever["expires_at"] is None
    assert too_long.status_code == 422
    assert (expired.status_code, expired.json()["detail"]) == (
        401,
        "API token unknown, revoked or expired",
    )
    assert kept.status_code == 200


async def test_only_the_owner_or_an_admin_revokes_a_token(fleet_db_url: str) -> None:
    async with fleet_app(fleet_db_url) as app:
        async with user(app, "op", Role.OPERATOR) as operator:
            issued = (
                await operator.post("/api/tokens", json={"name": "ci", "role": "viewer"})
            ).json()
        async with user(app, "ma", Role.MAINTAINER) as other:
            stranger = await other.delete(f"/api/tokens/{issued['id']}")
        async with client(app, token=issued["token"]) as script:
            still_works = await script.get("/api/me")
        async with user(app, "root", Role.ADMIN) as admin:
            by_admin = await admin.delete(f"/api/tokens/{issued['id']}")
            log = [(e["actor"], e["action"]) for e in (await admin.get("/api/audit")).json()]
    assert stranger.status_code == 404
    assert still_works.status_code == 200
    assert by_admin.status_code == 204
    assert ("user:root", "token.revoke") in log


async def test_nothing_is_readable_without_logging_in(fleet_db_url: str) -> None:
    point = {"site": "s", "gateway": "g", "device": "d", "point": "p"}
    async with fleet_app(fleet_db_url) as app, client(app) as anonymous:
        await add_user(app, "root", Role.ADMIN)
        paths = [
            "/api/overview", "/api/sites", "/api/sites/x", "/api/alarms", "/api/ingest",
            "/api/history", "/api/tokens", "/api/users", "/api/audit", "/api/me",
        ]  # fmt: skip
        answers = [await anonymous.get(p) for p in paths]
        answers.append(await anonymous.get("/api/history", params=point))
        ack = await anonymous.post("/api/alarms/1/ack")
        changes = [
            await anonymous.post("/api/sites", json={"name": "x"}),
            await anonymous.post("/api/sites/x/gateways", json={"name": "g"}),
            await anonymous.post("/api/tokens", json={"name": "t", "role": "viewer"}),
            await anonymous.delete("/api/tokens/1"),
            await anonymous.post("/api/users", json={"name": "x", "role": "admin",
                                                     "password": PASSWORD}),
            await anonymous.patch("/api/users/root", json={"disabled": True}),
            await anonymous.post("/api/logout"),
        ]  # fmt: skip
    assert [(a.url.path, a.status_code) for a in [*answers, ack, *changes]] == [
        (a.url.path, 401) for a in [*answers, ack, *changes]
    ]
    assert {a.json()["detail"] for a in [*answers, ack, *changes]} == {"not logged in"}


async def test_a_login_session_past_its_lifetime_is_refused(fleet_db_url: str) -> None:
    async with fleet_app(fleet_db_url, session_lifetime=timedelta(seconds=1)) as app:
        await add_user(app, "ada", Role.OPERATOR)
        async with client(app) as browser:
            answer = await browser.post("/api/login", json={"name": "ada", "password": PASSWORD})
            secret = browser.cookies["doorstep_session"]
            fresh = await browser.get("/api/me")
        await asyncio.sleep(1.1)
        async with client(app) as browser:  # the browser would drop it; a stolen copy is sent
            browser.cookies.set("doorstep_session", secret)
            expired = await browser.get("/api/me")
        async with login(app, "ada"):  # a new login clears the user's expired sessions
            pass
        async with app.state.sessions() as session:
            stored = (await session.scalars(select(LoginSession.token_hash))).all()
    assert "max-age=1" in answer.headers["set-cookie"].lower()
    assert fresh.status_code == 200
    assert (expired.status_code, expired.json()) == (401, {"detail": "not logged in"})
    assert digest(secret) not in stored
    assert len(stored) == 1


async def test_a_disabled_user_is_refused_at_once_and_an_admin_can_enable_them(
    fleet_db_url: str,
) -> None:
    async with fleet_app(fleet_db_url) as app, user(app, "root", Role.ADMIN) as admin:
        async with user(app, "op", Role.OPERATOR) as operator:
            issued = (
                await operator.post("/api/tokens", json={"name": "ci", "role": "viewer"})
            ).json()
            async with client(app, token=issued["token"]) as script:
                assert (await script.get("/api/me")).status_code == 200
                disabled = await admin.patch("/api/users/op", json={"disabled": True})
                cookie_after = await operator.get("/api/me")
                token_after = await script.get("/api/me")
        async with client(app) as browser:
            relogin = await browser.post("/api/login", json={"name": "op", "password": PASSWORD})
        async with app.state.sessions() as session:
            op_sessions = (
                await session.scalars(
                    select(LoginSession.token_hash).join(User).where(User.name == "op")
                )
            ).all()
            revoked_at = await session.scalar(
                select(ApiToken.revoked_at).where(ApiToken.id == issued["id"])
            )
        enabled = await admin.patch("/api/users/op", json={"disabled": False})
        async with login(app, "op") as again:
            me = (await again.get("/api/me")).json()
        async with client(app, token=issued["token"]) as script:
            old_token = await script.get("/api/me")
        updates = [
            e for e in (await admin.get("/api/audit")).json() if e["action"] == "user.update"
        ]
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["disabled"] is True
    assert (cookie_after.status_code, cookie_after.json()) == (401, {"detail": "not logged in"})
    assert token_after.status_code == 401
    assert (relogin.status_code, relogin.json()) == (401, {"detail": LOGIN_FAILED})
    assert op_sessions == []
    assert revoked_at is not None
    assert (enabled.status_code, enabled.json()["disabled"]) == (200, False)
    assert me == {"name": "op", "role": "operator"}
    assert old_token.status_code == 401  # enabling brings no token back
    assert [(e["actor"], e["target"], e["detail"]) for e in updates] == [
        ("user:root", "user:op", {
            "before": {"role": "operator", "disabled": True},
            "after": {"role": "operator", "disabled": False},
        }),
        ("user:root", "user:op", {
            "before": {"role": "operator", "disabled": False},
            "after": {"role": "operator", "disabled": True},
            "sessions_ended": 1, "tokens_revoked": 1,
        }),
    ]  # fmt: skip


async def test_a_role_change_takes_effect_on_the_next_request(fleet_db_url: str) -> None:
    async with fleet_app(fleet_db_url) as app:
        alarm = await an_alarm(app)
        async with login(app, "root") as admin, user(app, "vi", Role.VIEWER) as viewer:
            denied = await viewer.post(f"/api/alarms/{alarm}/ack")
            promoted = await admin.patch("/api/users/vi", json={"role": "maintainer"})
            me = (await viewer.get("/api/me")).json()
            acked = await viewer.post(f"/api/alarms/{alarm}/ack")
            await admin.patch("/api/users/vi", json={"role": "viewer"})
            demoted = await viewer.post(f"/api/alarms/{alarm}/ack")
            [update, *_] = [
                e for e in (await admin.get("/api/audit")).json() if e["action"] == "user.update"
            ]
    assert denied.status_code == 403
    assert promoted.json()["role"] == "maintainer"
    assert me == {"name": "vi", "role": "maintainer"}
    assert acked.status_code == 200
    assert (demoted.status_code, demoted.json()) == (403, {"detail": ACK_DENIED})
    assert update["detail"] == {
        "before": {"role": "maintainer", "disabled": False},
        "after": {"role": "viewer", "disabled": False},
    }


async def test_the_last_enabled_admin_cannot_be_disabled_or_demoted(fleet_db_url: str) -> None:
    last = (
        "user 'root' is the last enabled admin: make another user admin first "
        "(nobody could manage users otherwise)"
    )
    async with fleet_app(fleet_db_url) as app, user(app, "root", Role.ADMIN) as admin:
        disable_self = await admin.patch("/api/users/root", json={"disabled": True})
        demote_self = await admin.patch("/api/users/root", json={"role": "operator"})
        async with user(app, "op", Role.OPERATOR) as operator:
            by_operator = await operator.patch("/api/users/op", json={"role": "admin"})
        unknown = await admin.patch("/api/users/nobody", json={"disabled": True})
        empty = await admin.patch("/api/users/op", json={})
        await add_user(app, "ada", Role.ADMIN)
        await admin.patch("/api/users/ada", json={"disabled": True})
        ada_disabled = await admin.patch("/api/users/root", json={"role": "viewer"})
        await admin.patch("/api/users/ada", json={"disabled": False})
        demoted = await admin.patch("/api/users/root", json={"role": "viewer"})
        as_viewer = await admin.get("/api/users")
    for refused in (disable_self, demote_self, ada_disabled):
        assert (refused.status_code, refused.json()) == (409, {"detail": last})
    assert by_operator.json() == {"detail": "changing users needs the admin role; you are operator"}
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "no user 'nobody'"})
    assert empty.status_code == 422
    assert "expected at least one of role, disabled" in empty.text
    assert (demoted.status_code, demoted.json()["role"]) == (200, "viewer")
    assert as_viewer.status_code == 403


async def test_an_api_token_cannot_make_or_revoke_tokens(fleet_db_url: str) -> None:
    async with fleet_app(fleet_db_url) as app, user(app, "root", Role.ADMIN) as admin:
        leaked = (await admin.post("/api/tokens", json={"name": "wall", "role": "viewer"})).json()
        other = (await admin.post("/api/tokens", json={"name": "ci", "role": "admin"})).json()
        async with client(app, token=leaked["token"]) as thief:
            minted = await thief.post("/api/tokens", json={"name": "mine", "role": "viewer"})
            revoked = await thief.delete(f"/api/tokens/{other['id']}")
            own = await thief.delete(f"/api/tokens/{leaked['id']}")
        async with client(app, token=other["token"]) as script:
            still = await script.get("/api/me")
        listed = (await admin.get("/api/tokens")).json()
    refused = {"detail": "managing API tokens needs a login session"}
    for answer in (minted, revoked, own):
        assert (answer.status_code, answer.json()) == (403, refused)
    assert still.status_code == 200
    assert [(t["name"], t["revoked_at"]) for t in listed] == [("wall", None), ("ci", None)]


async def test_an_id_out_of_range_is_bad_input_not_a_server_error(fleet_db_url: str) -> None:
    too_large = (2**64, 2**63, 2**31)
    async with fleet_app(fleet_db_url) as app, user(app, "root", Role.ADMIN) as admin:
        acks = [await admin.post(f"/api/alarms/{bad}/ack") for bad in (*too_large, 0, -1)]
        revokes = [await admin.delete(f"/api/tokens/{bad}") for bad in (*too_large, 0)]
        largest_alarm = await admin.post(f"/api/alarms/{2**31 - 1}/ack")
        largest_token = await admin.delete(f"/api/tokens/{2**31 - 1}")
    assert [a.status_code for a in acks + revokes] == [422] * 9
    assert "less than or equal to 2147483647" in acks[0].text
    assert (largest_alarm.status_code, largest_token.status_code) == (404, 404)


async def test_two_admins_demoting_each_other_at_once_leave_one_admin(fleet_db_url: str) -> None:
    async with (
        fleet_app(fleet_db_url) as app,
        user(app, "root", Role.ADMIN) as root,
        user(app, "ada", Role.ADMIN) as ada,
    ):
        for _ in range(3):
            answers = await asyncio.gather(
                root.patch("/api/users/ada", json={"role": "operator"}),
                ada.patch("/api/users/root", json={"disabled": True}),
            )
            async with app.state.sessions() as session:
                admins = (
                    await session.scalars(
                        select(User.name).where(User.role == "admin", User.disabled.is_(False))
                    )
                ).all()
                # the other was refused: the last admin, or no longer an admin when it asked
                codes = sorted(a.status_code for a in answers)
                assert codes in ([200, 401], [200, 403], [200, 409]), [a.text for a in answers]
                assert len(admins) == 1
                for who in await session.scalars(select(User).where(User.name != "")):
                    who.role, who.disabled = "admin", False  # both admins again
                await session.commit()
            for browser, name in ((root, "root"), (ada, "ada")):
                answer = await browser.post("/api/login", json={"name": name, "password": PASSWORD})
                assert answer.status_code == 200

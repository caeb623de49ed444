"""Logging in and out with a browser, and who the current actor is."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Cookie, Depends, Request, Response
from pydantic import BaseModel, Field

from fleet.accounts import audit
from fleet.accounts.login_throttle import LoginGuard
from fleet.accounts.logins import log_in, log_out
from fleet.accounts.passwords import MAX_PASSWORD
from fleet.api.deps import COOKIE, ActorDep, SessionDep, SettingsDep
from fleet.errors import LoginFailed, TooManyLogins
from fleet.models import Role

router = APIRouter(tags=["session"])
log = logging.getLogger(__name__)


class Credentials(BaseModel):
    name: str = Field(max_length=64)
    password: str = Field(max_length=MAX_PASSWORD)


class Me(BaseModel):
    name: str
    role: Role


async def _login_guard(request: Request) -> LoginGuard:
    """The app's one LoginGuard, made on first use (async: no two threads make one each)."""
    state = request.app.state
    guard: LoginGuard | None = getattr(state, "login_guard", None)
    if guard is None:
        guard = state.login_guard = LoginGuard.from_settings(state.settings, state.sessions)
    return guard


@router.post(
    "/login",
    responses={
        401: {"description": "wrong name or password"},
        429: {"description": "too many failed logins for that name or from that address"},
    },
)
async def login(
    credentials: Credentials,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    guard: Annotated[LoginGuard, Depends(_login_guard)],
) -> Me:
    """Check the password and set the ``doorstep_session`` cookie (HttpOnly, SameSite=Strict,
    12 h). The one error message never says whether the user exists. After 5 failed logins
    in a row for a name from one address, or 20 from an address, 429 until 5 minutes after
    the last one (a stranger's guesses never lock the user out of their own address)."""
    client = request.client.host if request.client else "?"
    try:
        await guard.throttle.check(credentials.name, client)
        user, secret = await log_in(
            session,
            credentials.name,
            credentials.password,
            settings.session_lifetime,
            guard.password_check(credentials.name, client),
        )
    except LoginFailed:
        await guard.throttle.failed(credentials.name, client)
        log.warning("failed login as %r from %s", credentials.name, client)
        raise
    except TooManyLogins as exc:
        log.warning("refused login as %r from %s: %s", credentials.name, client, exc)
        raise
    await guard.throttle.succeeded(session, credentials.name, client)
    audit.record(session, f"user:{user.name}", "session.login", f"user:{user.name}")
    await session.commit()
    response.set_cookie(
        COOKIE,
        secret,
        max_age=int(settings.session_lifetime.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return Me(name=user.name, role=Role(user.role))


@router.post("/logout", status_code=204)
async def logout(
    actor: ActorDep,
    session: SessionDep,
    response: Response,
    cookie: Annotated[str | None, Cookie(alias=COOKIE, include_in_schema=False)] = None,
) -> None:
    """End this browser login (an API token is revoked with DELETE /api/tokens/{id})."""
    if cookie is not None and actor.token_id is None:
        await log_out(session, cookie)
        audit.record(session, actor.label, "session.logout", f"user:{actor.user}")
        await session.commit()
    response.delete_cookie(COOKIE, httponly=True, samesite="strict")


@router.get("/me")
async def me(actor: ActorDep) -> Me:
    return Me(name=actor.user, role=actor.role)

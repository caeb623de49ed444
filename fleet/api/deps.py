"""Typed dependencies of the API routes: the request's database session and its actor.

Every request resolves an actor, from ``Authorization: Bearer TOKEN`` or else the
``doorstep_session`` cookie; a route that needs more than reading asks for a role with
:func:`role`, which answers 403 with "DOING needs the ROLE role; you are ROLE".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.accounts.actor import Actor
from fleet.accounts.logins import session_actor
from fleet.accounts.tokens import token_actor
from fleet.core.settings import Settings
from fleet.models import Role

COOKIE = "doorstep_session"
NOT_LOGGED_IN = "not logged in"
BAD_TOKEN = "API token unknown, revoked or expired"  # noqa: S105 (a message)
NEEDS_LOGIN_SESSION = "managing API tokens needs a login session"

_bearer = HTTPBearer(auto_error=False, description="an API token (POST /api/tokens)")
_cookie = APIKeyCookie(name=COOKIE, auto_error=False, description="a login (POST /api/login)")


async def _db_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SessionDep = Annotated[AsyncSession, Depends(_db_session)]
#: a row id in a path (alarms, API tokens): 1 .. 2**31-1, the range of their INTEGER primary
#: keys on PostgreSQL; 422 outside it rather than a database error
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
SettingsDep = Annotated[Settings, Depends(_settings)]


async def _actor(
    session: SessionDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> Actor:
    if bearer is not None:
        actor = await token_actor(session, bearer.credentials)
        if actor is None:
            raise HTTPException(401, BAD_TOKEN, headers={"WWW-Authenticate": "Bearer"})
        return actor
    actor = None if cookie is None else await session_actor(session, cookie)
    if actor is None:
        raise HTTPException(401, NOT_LOGGED_IN)
    return actor


ActorDep = Annotated[Actor, Depends(_actor)]


async def _logged_in_actor(actor: ActorDep) -> Actor:
    if actor.token_id is not None:  # a leaked token must not mint or revoke tokens
        raise HTTPException(403, NEEDS_LOGIN_SESSION)
    return actor


#: the actor of a browser login (403 for an API token): for managing API tokens
LoggedInActorDep = Annotated[Actor, Depends(_logged_in_actor)]


def role(needed: Role, doing: str) -> Any:
    """A dependency: the actor, if it holds ``needed`` (403 naming ``doing`` otherwise)."""

    async def check(actor: ActorDep) -> Actor:
        actor.require(needed, doing)
        return actor

    return Depends(check)

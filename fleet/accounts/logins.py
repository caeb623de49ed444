"""Browser login sessions: logging in with a name and password, the session cookie's secret,
and the actor behind it.

The functions add rows to the caller's session; the caller commits, together with the audit
entry that describes the change (fleet.accounts.audit).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.accounts.actor import Actor, user_actor
from fleet.accounts.credentials import digest, new_secret
from fleet.accounts.passwords import matches
from fleet.errors import LoginFailed
from fleet.models import LoginSession, User, utcnow


async def log_in(
    session: AsyncSession,
    name: str,
    password: str,
    lifetime: timedelta,
    password_check: AbstractAsyncContextManager[object],
) -> tuple[User, str]:
    """The user and a new session secret for the cookie; LoginFailed otherwise (one message
    whether the name is unknown, the password wrong or the user disabled).

    The password hash is read and the transaction ended before the slow argon2 check, so a
    burst of logins holds no database connection while it waits; the check runs inside
    ``password_check`` (fleet.accounts.login_throttle: a limited slot, the throttle checked)."""
    found = (
        await session.execute(select(User.id, User.password_hash).where(User.name == name))
    ).one_or_none()
    await session.rollback()  # hand the connection back to the pool
    async with password_check:
        matched = await matches(None if found is None else found.password_hash, password)
    if found is None or not matched:
        raise LoginFailed()
    user = await session.get(User, found.id)  # disabled or deleted meanwhile?
    if user is None or user.disabled:
        raise LoginFailed()
    now = utcnow()
    await session.execute(
        delete(LoginSession).where(LoginSession.user_id == user.id, LoginSession.expires_at <= now)
    )
    secret = new_secret()
    session.add(
        LoginSession(
            token_hash=digest(secret), user_id=user.id, created_at=now, expires_at=now + lifetime
        )
    )
    return user, secret


async def log_out(session: AsyncSession, secret: str) -> None:
    await session.execute(delete(LoginSession).where(LoginSession.token_hash == digest(secret)))


async def session_actor(session: AsyncSession, secret: str) -> Actor | None:
    """The actor of an unexpired login session cookie, or None."""
    user = await session.scalar(
        select(User)
        .join(LoginSession, LoginSession.user_id == User.id)
        .where(LoginSession.token_hash == digest(secret), LoginSession.expires_at > utcnow())
    )
    if user is None or user.disabled:
        return None
    return user_actor(user)


async def end_all(session: AsyncSession, user_id: int) -> int:
    """End every login session of a user; how many there were."""
    ended = await session.execute(delete(LoginSession).where(LoginSession.user_id == user_id))
    return cast(CursorResult[Any], ended).rowcount

"""API tokens: made for a user with a role at most theirs, shown once, revoked by their owner
(or an admin), refused after their lifetime.

A token acts with its own role, never above its owner's: checked when it is made and again
on every use, should the owner have been demoted since. The functions add rows to the
caller's session; the caller commits, together with the audit entry (fleet.accounts.audit).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.accounts.actor import Actor
from fleet.accounts.credentials import digest, new_secret
from fleet.accounts.roles import lowest, role_of
from fleet.errors import AccessDenied, TokenNotFound, UserError
from fleet.models import ApiToken, Role, User, utcnow

TOKEN_PREFIX = "dst_"  # noqa: S105 (marks a Doorstep token in logs)
#: An API token is refused after this unless made with another lifetime (or none).
DEFAULT_TOKEN_LIFETIME = timedelta(days=90)


async def token_actor(session: AsyncSession, secret: str) -> Actor | None:
    """The actor of an unrevoked API token, or None. Its role is the lower of its own and
    its owner's current one."""
    row = (
        await session.execute(
            select(ApiToken, User)
            .join(User, ApiToken.user_id == User.id)
            .where(ApiToken.token_hash == digest(secret), ApiToken.revoked_at.is_(None))
        )
    ).one_or_none()
    if row is None:
        return None
    token, user = row
    if user.disabled or (token.expires_at is not None and token.expires_at <= utcnow()):
        return None
    return Actor(
        user_id=user.id,
        user=user.name,
        role=lowest(Role(token.role), Role(user.role)),
        label=f"token:{token.name}@{user.name}",
        token_id=token.id,
    )


async def create_token(
    session: AsyncSession,
    actor: Actor,
    owner: User,
    name: str,
    role: Role | str,
    expires_in: timedelta | None = DEFAULT_TOKEN_LIFETIME,
) -> tuple[ApiToken, str]:
    """A token for ``owner`` and its secret (shown once). Its role may be at most the owner's
    and at most the actor's (a token cannot mint a stronger one). It is refused after
    ``expires_in`` (None: never)."""
    checked = role_of(role)
    if expires_in is not None and expires_in <= timedelta(0):
        raise UserError(f"token lifetime {expires_in}: expected a positive time, or none")
    if not 1 <= len(name) <= 64:
        raise UserError(f"token name {name!r}: expected 1-64 characters")
    ceiling = lowest(Role(owner.role), actor.role)
    if checked.rank > ceiling.rank:
        raise AccessDenied(
            f"a token cannot have a role above its owner's: asked for {checked}, "
            f"at most {ceiling} allowed"
        )
    secret = new_secret(TOKEN_PREFIX)
    token = ApiToken(
        token_hash=digest(secret), name=name, user_id=owner.id, role=checked.value,
        created_at=utcnow(), expires_at=None if expires_in is None else utcnow() + expires_in,
    )  # fmt: skip
    session.add(token)
    await session.flush()
    return token, secret


async def revoke_token(session: AsyncSession, actor: Actor, token_id: int) -> bool:
    """Revoke one of the actor's own tokens (an admin: anyone's); False if it already was.
    TokenNotFound for a token that does not exist or is someone else's."""
    token = await session.get(ApiToken, token_id)
    if token is None or (token.user_id != actor.user_id and actor.role is not Role.ADMIN):
        raise TokenNotFound(f"no API token {token_id} of yours")
    if token.revoked_at is not None:
        return False
    token.revoked_at = utcnow()
    return True


async def revoke_all(session: AsyncSession, user_id: int) -> int:
    """Revoke every unrevoked API token of a user; how many there were."""
    revoked = await session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return cast(CursorResult[Any], revoked).rowcount

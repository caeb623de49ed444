"""Who is asking: users with argon2id passwords, browser login sessions, API tokens, roles.

Secrets (session cookies, API tokens) are random, shown to their holder once, and stored
only as their SHA-256. Every request resolves to an :class:`Actor`; what it may do is decided
by :meth:`Actor.require` on :attr:`fleet.models.Role.rank`. A token acts with its own role,
never above its owner's (checked when it is made and again on every use, should the owner
have been demoted since).

The functions here add rows to the caller's session and flush; the caller commits, together
with the audit entry that describes the change (fleet.accounts.audit).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import cache
from typing import Any, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import CursorResult, delete, false, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.models import ApiToken, LoginSession, Role, User, utcnow

MIN_PASSWORD = 12
MAX_PASSWORD = 1024
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
TOKEN_PREFIX = "dst_"  # noqa: S105 (marks a Doorstep token in logs)
#: An API token is refused after this unless made with another lifetime (or none).
DEFAULT_TOKEN_LIFETIME = timedelta(days=90)
#: the one message for every failed login: it never says whether the user exists
LOGIN_FAILED = "wrong name or password"

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory parameters


class AuthError(Exception):
    """Base of this module's errors; the message is meant for the person who asked."""


class UserError(AuthError):
    """A user that cannot be created: bad name, weak password, unknown role."""


class UserExists(UserError):
    """A user of that name exists already."""


class LoginFailed(AuthError):
    """Wrong name or password (or a disabled user): always :data:`LOGIN_FAILED`."""

    def __init__(self) -> None:
        super().__init__(LOGIN_FAILED)


class TooManyLogins(AuthError):
    """Logging in refused for a while after failed logins (fleet.accounts.login_throttle)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AccessDenied(AuthError):
    """The actor's role is too low for what it asked."""


class TokenNotFound(AuthError):
    """No such API token, or not one the actor may revoke."""


class UserNotFound(AuthError):
    """No user of that name."""


class LastAdmin(AuthError):
    """The change would leave no enabled admin, and nobody could manage users any more."""


@dataclass(frozen=True)
class Actor:
    """The person (or their token) behind one request or command."""

    user_id: int | None
    user: str
    role: Role
    label: str  # the audit actor: "user:NAME", "token:TOKEN@USER", "cli:UNIXUSER"
    token_id: int | None = None

    def require(self, role: Role, doing: str) -> None:
        """AccessDenied unless this actor holds ``role`` or above; ``doing`` names the action,
        e.g. "acknowledging alarms"."""
        if self.role.rank < role.rank:
            raise AccessDenied(f"{doing} needs the {role} role; you are {self.role}")


def digest(secret: str) -> str:
    """What is stored of a session or token secret: its SHA-256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def role_of(value: str | Role) -> Role:
    """A role by name; UserError naming the value and the roles there are."""
    try:
        return Role(value)
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise UserError(f"role {value!r}: expected one of {known}") from None


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password: at least {MIN_PASSWORD} characters expected")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"password: at most {MAX_PASSWORD} characters expected")


def check_user_name(name: str) -> None:
    if not USER_NAME.match(name):
        raise UserError(
            f"user name {name!r}: expected 1-64 letters, digits or . _ @ -, "
            "starting with a letter or digit"
        )


async def hash_password(password: str) -> str:
    """argon2id, in a worker thread: a hash costs tens of milliseconds of CPU."""
    return await asyncio.to_thread(_hasher.hash, password)


async def _verify(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; ``None`` (no such user) checks against a decoy hash, so
    that answer takes as long. In a worker thread: argon2 costs tens of ms of CPU."""

    def verify() -> bool:
        try:
            return _hasher.verify(password_hash or _decoy_hash(), password)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify) and password_hash is not None


@cache
def _decoy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


async def create_user(session: AsyncSession, name: str, role: Role | str, password: str) -> User:
    """A new user with an argon2id password hash, added to ``session`` (the caller commits).
    UserError for a bad name, a weak password or an unknown role; UserExists for a duplicate."""
    check_user_name(name)
    checked_role = role_of(role)
    check_password(password)
    if await session.scalar(select(User.id).where(User.name == name)) is not None:
        raise UserExists(f"user {name!r} exists already")
    user = User(name=name, role=checked_role.value, password_hash=await hash_password(password))
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:  # created by someone else between the check and the insert
        raise UserExists(f"user {name!r} exists already") from None
    return user


def user_actor(user: User) -> Actor:
    return Actor(user_id=user.id, user=user.name, role=Role(user.role), label=f"user:{user.name}")


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
        matches = await _verify(None if found is None else found.password_hash, password)
    if found is None or not matches:
        raise LoginFailed()
    user = await session.get(User, found.id)  # disabled or deleted meanwhile?
    if user is None or user.disabled:
        raise LoginFailed()
    now = utcnow()
    await session.execute(
        delete(LoginSession).where(LoginSession.user_id == user.id, LoginSession.expires_at <= now)
    )
    secret = secrets.token_urlsafe(32)
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
    role = min(Role(token.role), Role(user.role), key=lambda r: r.rank)
    return Actor(
        user_id=user.id,
        user=user.name,
        role=role,
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
    ceiling = min(Role(owner.role), actor.role, key=lambda r: r.rank)
    if checked.rank > ceiling.rank:
        raise AccessDenied(
            f"a token cannot have a role above its owner's: asked for {checked}, "
            f"at most {ceiling} allowed"
        )
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
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


@dataclass(frozen=True)
class UserChange:
    """What :func:`update_user` did: the user's role and disabled flag before and after, and
    the login sessions ended and API tokens revoked by disabling."""

    user: User
    before: dict[str, Any]
    after: dict[str, Any]
    sessions_ended: int = 0
    tokens_revoked: int = 0

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def detail(self) -> dict[str, Any]:
        """The audit entry's detail."""
        detail: dict[str, Any] = {"before": self.before, "after": self.after}
        if self.sessions_ended or self.tokens_revoked:
            detail |= {"sessions_ended": self.sessions_ended, "tokens_revoked": self.tokens_revoked}
        return detail


def _standing(user: User) -> dict[str, Any]:
    return {"role": user.role, "disabled": user.disabled}


async def update_user(
    session: AsyncSession, name: str, role: Role | str | None = None, disabled: bool | None = None
) -> UserChange:
    """Change a user's role and/or disable or enable them, in the caller's transaction.

    Disabling ends all their login sessions and revokes all their API tokens (enabling again
    brings neither back). UserNotFound for an unknown name; LastAdmin when the change would
    leave no enabled admin (the enabled admins are locked for the rest of the transaction,
    so two admins demoting each other at once cannot both succeed)."""
    new_role = None if role is None else role_of(role)
    if session.get_bind().dialect.name == "sqlite":
        # no row locks there: take the database's write lock before reading anything, so
        # the check below sees what a concurrent change committed
        await session.execute(
            update(User)
            .where(false())
            .values(disabled=User.disabled)
            .execution_options(synchronize_session=False)
        )
    user = await session.scalar(select(User).where(User.name == name))
    if user is None:
        raise UserNotFound(f"no user {name!r}")
    before = _standing(user)
    stays_admin = (new_role or Role(user.role)) is Role.ADMIN and not (
        user.disabled if disabled is None else disabled
    )
    if user.role == Role.ADMIN and not user.disabled and not stays_admin:
        # every enabled admin locked, in one order (no deadlock between two such changes);
        # a change committed meanwhile is seen once the lock is ours
        admins = await session.scalars(
            select(User.id)
            .where(User.role == Role.ADMIN.value, User.disabled.is_(False))
            .order_by(User.id)
            .with_for_update()
        )
        if not set(admins.all()) - {user.id}:
            raise LastAdmin(
                f"user {name!r} is the last enabled admin: make another user admin first "
                "(nobody could manage users otherwise)"
            )
    if new_role is not None:
        user.role = new_role.value
    if disabled is not None:
        user.disabled = disabled
    change = UserChange(user=user, before=before, after=_standing(user))
    if disabled and not before["disabled"]:
        change = await _cut_off(session, change)
    await session.flush()
    return change


async def _cut_off(session: AsyncSession, change: UserChange) -> UserChange:
    """End every login session of a user being disabled and revoke every API token of theirs."""
    user_id = change.user.id
    ended = await session.execute(delete(LoginSession).where(LoginSession.user_id == user_id))
    revoked = await session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return replace(
        change,
        sessions_ended=cast(CursorResult[Any], ended).rowcount,
        tokens_revoked=cast(CursorResult[Any], revoked).rowcount,
    )

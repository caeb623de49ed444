"""Users: creating one (name, role, argon2id password), changing a user's role, disabling
and enabling them, and keeping at least one enabled admin.

The functions add rows to the caller's session and flush; the caller commits, together with
the audit entry that describes the change (fleet.accounts.audit). A duplicate name that the
database refuses on insert (its ``IntegrityError``) becomes :class:`~fleet.errors.UserExists`
here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import false, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.accounts import logins, tokens
from fleet.accounts.passwords import check_password, hash_password
from fleet.accounts.roles import role_of
from fleet.errors import LastAdmin, UserError, UserExists, UserNotFound
from fleet.models import Role, User

USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def check_user_name(name: str) -> None:
    if not USER_NAME.match(name):
        raise UserError(
            f"user name {name!r}: expected 1-64 letters, digits or . _ @ -, "
            "starting with a letter or digit"
        )


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
        await _keep_an_admin(session, user)
    if new_role is not None:
        user.role = new_role.value
    if disabled is not None:
        user.disabled = disabled
    change = UserChange(user=user, before=before, after=_standing(user))
    if disabled and not before["disabled"]:
        change = await _cut_off(session, change)
    await session.flush()
    return change


async def _keep_an_admin(session: AsyncSession, leaving: User) -> None:
    """LastAdmin unless an enabled admin other than ``leaving`` remains.

    Every enabled admin is locked, in one order (no deadlock between two such changes); a
    change committed meanwhile is seen once the lock is ours."""
    admins = await session.scalars(
        select(User.id)
        .where(User.role == Role.ADMIN.value, User.disabled.is_(False))
        .order_by(User.id)
        .with_for_update()
    )
    if not set(admins.all()) - {leaving.id}:
        raise LastAdmin(
            f"user {leaving.name!r} is the last enabled admin: make another user admin first "
            "(nobody could manage users otherwise)"
        )


async def _cut_off(session: AsyncSession, change: UserChange) -> UserChange:
    """End every login session of a user being disabled and revoke every API token of theirs."""
    user_id = change.user.id
    return replace(
        change,
        sessions_ended=await logins.end_all(session, user_id),
        tokens_revoked=await tokens.revoke_all(session, user_id),
    )

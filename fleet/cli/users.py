"""``fleet user create | list | disable | enable | set-role | remove``: the first admin, and
the users seen and changed on the server itself."""

from __future__ import annotations

import argparse
import secrets
import sys

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.accounts import audit
from fleet.accounts.actor import cli_actor
from fleet.accounts.passwords import MIN_PASSWORD
from fleet.accounts.roles import ROLE_NAMES
from fleet.accounts.users import create_user, update_user
from fleet.cli import database, listing
from fleet.errors import BadInput
from fleet.models import ApiToken, User


def add_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], db: argparse.ArgumentParser
) -> None:
    """``fleet user ACTION``; ``db`` adds the ``--db`` option."""
    user = commands.add_parser("user", help="users").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create = user.add_parser("create", parents=[db], help="create a user (the first admin too)")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--role", required=True, choices=ROLE_NAMES)
    create.add_argument(
        "--password-stdin", action="store_true",
        help="read the password from standard input (else one is generated and printed once)",
    )  # fmt: skip
    create.set_defaults(change=user_create)

    for action, what in (
        ("disable", "disable a user: ends their login sessions, revokes their API tokens"),
        ("enable", "enable a disabled user again (their old tokens stay revoked)"),
    ):
        toggle = user.add_parser(action, parents=[db], help=what)
        toggle.add_argument("name", metavar="NAME")
        toggle.set_defaults(change=user_update)
    set_role = user.add_parser("set-role", parents=[db], help="change a user's role")
    set_role.add_argument("name", metavar="NAME")
    set_role.add_argument("role", metavar="ROLE", choices=ROLE_NAMES, help=", ".join(ROLE_NAMES))
    set_role.set_defaults(change=user_update)

    listed = user.add_parser("list", parents=[db], help="list the users")
    listing.json_option(listed)
    listed.set_defaults(change=user_list)
    remove = user.add_parser(
        "remove", parents=[db],
        help="remove a user: their login sessions and API tokens go with them (the audit log "
        "keeps their name); not the last enabled admin",
    )  # fmt: skip
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(change=user_remove)


def _new_password(args: argparse.Namespace) -> tuple[str, bool]:
    """The password from standard input, or a generated one (and whether it was)."""
    if not args.password_stdin:
        return secrets.token_urlsafe(15), True
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise BadInput(
            f"--password-stdin: expected a password of at least {MIN_PASSWORD} characters "
            "on the first line of standard input, got nothing"
        )
    return password, False


def user_create(args: argparse.Namespace) -> str:
    password, generated = _new_password(args)
    actor = cli_actor()

    async def change(session: AsyncSession) -> User:
        user = await create_user(session, args.name, args.role, password)
        audit.record(session, actor.label, "user.create", f"user:{user.name}", {"role": user.role})
        return user

    user = database.change(args.db, change)
    done = f"created user {user.name} with role {user.role}"
    return f"{done}; password (shown once): {password}" if generated else done


def user_update(args: argparse.Namespace) -> str:
    """``user disable``, ``user enable`` and ``user set-role``: audited as "user.update"."""
    actor = cli_actor()
    disabled = {"disable": True, "enable": False}.get(args.action)
    role = getattr(args, "role", None)

    async def change(session: AsyncSession) -> str:
        done = await update_user(session, args.name, role, disabled)
        if done.changed:
            audit.record(session, actor.label, "user.update", f"user:{args.name}", done.detail())
        user = done.user
        if args.action == "set-role":
            return f"user {user.name} has role {user.role}"
        if not user.disabled:
            return f"enabled user {user.name}"
        return (
            f"disabled user {user.name}: ended {done.sessions_ended} login session(s), "
            f"revoked {done.tokens_revoked} API token(s)"
        )

    return database.change(args.db, change)


def user_list(args: argparse.Namespace) -> str:
    """Every user: name, role, enabled or disabled, when created, API tokens in use."""

    async def look(session: AsyncSession) -> list[dict[str, object]]:
        active = (
            select(func.count(ApiToken.id))
            .where(ApiToken.user_id == User.id, ApiToken.revoked_at.is_(None))
            .scalar_subquery()
        )
        rows = await session.execute(select(User, active).order_by(User.name))
        return [
            {
                "name": user.name, "role": user.role, "disabled": user.disabled,
                "created": user.created_at, "tokens": tokens,
            }
            for user, tokens in rows
        ]  # fmt: skip

    users = database.read(args.db, look)
    return listing.render(args, ("name", "role", "disabled", "created", "tokens"), users)


def user_remove(args: argparse.Namespace) -> str:
    """Disable the user (which ends their sessions, revokes their tokens and refuses to leave
    no enabled admin), then delete them; audited as "user.remove"."""
    actor = cli_actor()

    async def change(session: AsyncSession) -> str:
        done = await update_user(session, args.name, disabled=True)
        user = done.user
        await session.execute(delete(User).where(User.id == user.id))
        audit.record(session, actor.label, "user.remove", f"user:{user.name}", {"role": user.role})
        return f"removed user {user.name} (role {user.role})"

    return database.change(args.db, change)

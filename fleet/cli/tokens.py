"""``fleet token create``: an API token for a user, made on the server itself."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.accounts import audit
from fleet.accounts.actor import cli_actor
from fleet.accounts.roles import ROLE_NAMES
from fleet.accounts.tokens import DEFAULT_TOKEN_LIFETIME, create_token
from fleet.cli import database
from fleet.errors import AccessDenied, BadInput, Failed
from fleet.models import User


def add_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], db: argparse.ArgumentParser
) -> None:
    """``fleet token create``; ``db`` adds the ``--db`` option."""
    token = commands.add_parser("token", help="API tokens").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create = token.add_parser("create", parents=[db], help="create an API token for a user")
    create.add_argument("user", metavar="USER")
    create.add_argument("--name", required=True, help="what the token is for")
    create.add_argument("--role", required=True, choices=ROLE_NAMES, help="at most the user's")
    create.add_argument(
        "--expires-in-days",
        type=int,
        default=DEFAULT_TOKEN_LIFETIME.days,
        help="refused after this many days, 0: never (default %(default)s)",
    )
    create.set_defaults(change=token_create)


def _expiry(at: datetime | None) -> str:
    return "never expiring" if at is None else f"expires {at:%Y-%m-%d %H:%M} UTC"


def token_create(args: argparse.Namespace) -> str:
    actor = cli_actor()
    if not 0 <= args.expires_in_days <= 3650:
        raise BadInput(f"--expires-in-days: {args.expires_in_days} is not in 0..3650")
    lifetime = timedelta(days=args.expires_in_days) if args.expires_in_days else None

    async def change(session: AsyncSession) -> str:
        owner = await session.scalar(select(User).where(User.name == args.user))
        if owner is None:
            raise Failed(f"no user {args.user!r}")
        try:
            token, secret = await create_token(
                session, actor, owner, args.name, args.role, lifetime
            )
        except AccessDenied as exc:
            raise BadInput(f"--role: {exc} (user {owner.name} is {owner.role})") from None
        audit.record(
            session, actor.label, "token.create", f"token:{token.id}",
            {"name": token.name, "role": token.role, "owner": owner.name},
        )  # fmt: skip
        return (
            f"created API token {token.id} ({token.name}, role {token.role}) for {owner.name}, "
            f"{_expiry(token.expires_at)}; "
            f"the token (shown once): {secret}"
        )

    return database.change(args.db, change)

"""``fleet token create | list | revoke``: API tokens of users, made, seen and revoked on the
server itself. A revoked token stays listed (as revoked) for the audit trail."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.accounts import audit
from fleet.accounts.actor import cli_actor
from fleet.accounts.roles import ROLE_NAMES
from fleet.accounts.tokens import DEFAULT_TOKEN_LIFETIME, create_token, revoke_token
from fleet.cli import database, listing
from fleet.errors import AccessDenied, BadInput, Failed, TokenNotFound
from fleet.models import ApiToken, User, utcnow


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
    listed = token.add_parser("list", parents=[db], help="list the API tokens (of one user)")
    listed.add_argument("--user", metavar="USER", help="only this user's")
    listed.add_argument("--all", action="store_true", help="revoked and expired ones too")
    listing.json_option(listed)
    listed.set_defaults(change=token_list)
    revoke = token.add_parser(
        "revoke", aliases=["remove"], parents=[db], help="revoke an API token: refused from now on"
    )
    revoke.add_argument("id", metavar="ID", type=int, help="its id (`fleet token list`)")
    revoke.set_defaults(change=token_revoke)


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


def _state(token: ApiToken, now: datetime) -> str:
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at is not None and token.expires_at <= now:
        return "expired"
    return "active"


def token_list(args: argparse.Namespace) -> str:
    """The tokens in use (``--all``: revoked and expired ones too), oldest first."""

    async def look(session: AsyncSession) -> list[dict[str, object]]:
        now = utcnow()
        query = select(ApiToken, User.name).join(User, ApiToken.user_id == User.id)
        if args.user is not None:
            if await session.scalar(select(User.id).where(User.name == args.user)) is None:
                raise Failed(f"no user {args.user!r}")
            query = query.where(User.name == args.user)
        rows = await session.execute(query.order_by(ApiToken.id))
        return [
            {
                "id": t.id, "name": t.name, "user": owner, "role": t.role,
                "state": _state(t, now), "created": t.created_at, "expires": t.expires_at,
            }
            for t, owner in rows
            if args.all or _state(t, now) == "active"
        ]  # fmt: skip

    columns = ("id", "name", "user", "role", "state", "created", "expires")
    return listing.render(args, columns, database.read(args.db, look))


def token_revoke(args: argparse.Namespace) -> str:
    actor = cli_actor()

    async def change(session: AsyncSession) -> str:
        try:
            revoked = await revoke_token(session, actor, args.id)
        except TokenNotFound:
            raise Failed(f"no API token {args.id} (`fleet token list` lists them)") from None
        if not revoked:
            return f"API token {args.id} was revoked already"
        audit.record(session, actor.label, "token.revoke", f"token:{args.id}")
        return f"revoked API token {args.id}"

    return database.change(args.db, change)

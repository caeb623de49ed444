"""``fleet site add`` and ``fleet gateway add``: registering where gateways publish from."""

from __future__ import annotations

import argparse

from sqlalchemy.ext.asyncio import AsyncSession

from fleet.accounts import audit
from fleet.accounts.actor import cli_actor
from fleet.cli import database
from fleet.errors import Failed, NotRegistered
from fleet.registry import add_gateway, add_site


def add_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], db: argparse.ArgumentParser
) -> None:
    """``fleet site add`` and ``fleet gateway add``; ``db`` adds the ``--db`` option."""
    site = commands.add_parser("site", help="sites").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    new_site = site.add_parser("add", parents=[db], help="register a site")
    new_site.add_argument("name", metavar="NAME")
    new_site.add_argument("--title", default="", help="a human-readable name")
    new_site.set_defaults(change=site_add)

    gateway = commands.add_parser("gateway", help="gateways").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    new_gateway = gateway.add_parser("add", parents=[db], help="register a gateway of a site")
    new_gateway.add_argument("site", metavar="SITE")
    new_gateway.add_argument("name", metavar="NAME")
    new_gateway.set_defaults(change=gateway_add)


def site_add(args: argparse.Namespace) -> str:
    actor = cli_actor()

    async def change(session: AsyncSession) -> str:
        site = await add_site(session, args.name, args.title)
        audit.record(
            session, actor.label, "site.create", f"site:{site.name}", {"title": site.title}
        )
        return site.name

    return f"added site {database.change(args.db, change)}"


def gateway_add(args: argparse.Namespace) -> str:
    actor = cli_actor()

    async def change(session: AsyncSession) -> str:
        try:
            gateway = await add_gateway(session, args.site, args.name)
        except NotRegistered as exc:
            raise Failed(f"{exc}: add it first with `fleet site add {args.site}`") from None
        target = f"gateway:{args.site}/{gateway.name}"
        audit.record(session, actor.label, "gateway.create", target)
        return target.removeprefix("gateway:")

    return f"added gateway {database.change(args.db, change)}"

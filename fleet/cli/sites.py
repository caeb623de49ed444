"""``fleet site add | list | remove`` and ``fleet gateway add | list | remove``: registering
where gateways publish from, seeing what is registered, and removing it with its data."""

from __future__ import annotations

import argparse

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.accounts import audit
from fleet.accounts.actor import cli_actor
from fleet.cli import database, listing
from fleet.errors import Failed, NotRegistered
from fleet.models import Device, Gateway, Site
from fleet.registry import add_gateway, add_site, find_gateway, find_site


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
    sites = site.add_parser("list", parents=[db], help="list the sites")
    listing.json_option(sites)
    sites.set_defaults(change=site_list)
    gone_site = site.add_parser(
        "remove", parents=[db], help="remove a site (with --with-gateways: and its gateways)"
    )
    gone_site.add_argument("name", metavar="NAME")
    gone_site.add_argument(
        "--with-gateways", action="store_true",
        help="also remove its gateways, with their devices, history, alarms and configuration",
    )  # fmt: skip
    gone_site.set_defaults(change=site_remove)

    gateway = commands.add_parser("gateway", help="gateways").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    new_gateway = gateway.add_parser("add", parents=[db], help="register a gateway of a site")
    new_gateway.add_argument("site", metavar="SITE")
    new_gateway.add_argument("name", metavar="NAME")
    new_gateway.set_defaults(change=gateway_add)
    gateways = gateway.add_parser("list", parents=[db], help="list the gateways (of one site)")
    gateways.add_argument("site", metavar="SITE", nargs="?", help="only this site's")
    listing.json_option(gateways)
    gateways.set_defaults(change=gateway_list)
    gone_gateway = gateway.add_parser(
        "remove", parents=[db],
        help="remove a gateway with its devices, history, alarms and configuration; a gateway "
        "that still reports is then refused by ingest",
    )  # fmt: skip
    gone_gateway.add_argument("site", metavar="SITE")
    gone_gateway.add_argument("name", metavar="NAME")
    gone_gateway.set_defaults(change=gateway_remove)


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


def site_list(args: argparse.Namespace) -> str:
    async def look(session: AsyncSession) -> list[dict[str, object]]:
        count = select(func.count(Gateway.id)).where(Gateway.site_id == Site.id).scalar_subquery()
        rows = await session.execute(select(Site, count).order_by(Site.name))
        return [
            {"name": s.name, "title": s.title, "gateways": n, "created": s.created_at}
            for s, n in rows
        ]

    return listing.render(
        args, ("name", "title", "gateways", "created"), database.read(args.db, look)
    )


def site_remove(args: argparse.Namespace) -> str:
    actor = cli_actor()

    async def change(session: AsyncSession) -> str:
        site = await find_site(session, args.name)
        if site is None:
            raise Failed(f"no site {args.name!r} (`fleet site list` lists them)")
        names = (
            await session.scalars(
                select(Gateway.name).where(Gateway.site_id == site.id).order_by(Gateway.name)
            )
        ).all()
        if names and not args.with_gateways:
            raise Failed(
                f"site {site.name!r} has {len(names)} gateway(s) ({', '.join(names)}): remove "
                "them first, or add --with-gateways to remove them with their history and alarms"
            )
        await session.execute(delete(Site).where(Site.id == site.id))  # the database cascades
        audit.record(
            session, actor.label, "site.remove", f"site:{site.name}", {"gateways": list(names)}
        )
        with_gateways = f" and its gateways {', '.join(names)}" if names else ""
        return f"removed site {site.name}{with_gateways}"

    return database.change(args.db, change)


def gateway_list(args: argparse.Namespace) -> str:
    """Every gateway (of one site): whether online, when last seen, its version, devices."""

    async def look(session: AsyncSession) -> list[dict[str, object]]:
        if args.site is not None and await find_site(session, args.site) is None:
            raise Failed(f"no site {args.site!r} (`fleet site list` lists them)")
        devices = (
            select(func.count(Device.id)).where(Device.gateway_id == Gateway.id).scalar_subquery()
        )
        query = (
            select(Gateway, Site.name, devices)
            .join(Site, Gateway.site_id == Site.id)
            .order_by(Site.name, Gateway.name)
        )
        if args.site is not None:
            query = query.where(Site.name == args.site)
        return [
            {
                "site": site, "name": gw.name, "online": gw.online, "last_seen": gw.last_seen,
                "version": gw.version or None, "devices": n,
            }
            for gw, site, n in await session.execute(query)
        ]  # fmt: skip

    columns = ("site", "name", "online", "last_seen", "version", "devices")
    return listing.render(args, columns, database.read(args.db, look))


def gateway_remove(args: argparse.Namespace) -> str:
    actor = cli_actor()

    async def change(session: AsyncSession) -> str:
        gateway = await find_gateway(session, args.site, args.name)
        if gateway is None:
            raise Failed(
                f"no gateway {args.name!r} of site {args.site!r} (`fleet gateway list` lists them)"
            )
        await session.execute(delete(Gateway).where(Gateway.id == gateway.id))
        target = f"{args.site}/{gateway.name}"
        audit.record(session, actor.label, "gateway.remove", f"gateway:{target}")
        return f"removed gateway {target} with its devices, history and alarms"

    return database.change(args.db, change)

"""Sites and gateways the fleet knows: ingest accepts messages only from registered gateways.

Used by the CLI, the API and the tests. Names follow the wire contract (``wire.Name``:
lower-case letters, digits and dashes, at most 48 characters), because they are the topic
levels a gateway publishes under.

``register_*`` are idempotent (ingest's tests and tools register what may be there already);
``add_*`` make something new and refuse a duplicate with AlreadyRegistered, also when the
database refuses a concurrent insert (its ``IntegrityError`` is translated here).
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.errors import AlreadyRegistered, NotRegistered, RegistryError
from fleet.models import Gateway, Site

NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
MAX_NAME = 48


def check_name(what: str, name: str) -> str:
    if len(name) > MAX_NAME or not NAME.fullmatch(name):
        shown = name if len(name) <= 2 * MAX_NAME else f"{name[:MAX_NAME]}…"  # not echoed whole
        raise RegistryError(
            f"{what} name {shown!r}: expected lower-case letters, digits and dashes "
            f"(starting with a letter or digit), at most {MAX_NAME} characters"
        )
    return name


async def find_site(session: AsyncSession, site: str) -> Site | None:
    found: Site | None = await session.scalar(select(Site).where(Site.name == site))
    return found


async def find_gateway(session: AsyncSession, site: str, gateway: str) -> Gateway | None:
    found: Gateway | None = await session.scalar(
        select(Gateway).join(Site).where(Site.name == site, Gateway.name == gateway)
    )
    return found


async def register_site(session: AsyncSession, site: str, title: str = "") -> Site:
    """The site called ``site``, created if new (its title set only then, or if it had none).
    Flushed, not committed: the caller owns the transaction."""
    existing = await find_site(session, check_name("site", site))
    if existing is not None:
        if title and not existing.title:
            existing.title = title
        return existing
    created = Site(name=site, title=title)
    session.add(created)
    await session.flush()
    return created


async def register_gateway(
    session: AsyncSession, site: str, gateway: str, title: str = ""
) -> Gateway:
    """Register ``gateway`` of ``site`` (the site too, with ``title``, if it is new);
    idempotent: registering it again returns the same row. Flushed, not committed."""
    check_name("gateway", gateway)
    owner = await register_site(session, site, title)
    existing = await find_gateway(session, site, gateway)
    if existing is not None:
        return existing
    created = Gateway(site_id=owner.id, name=gateway)
    session.add(created)
    await session.flush()
    return created


async def list_gateways(session: AsyncSession) -> list[tuple[str, str]]:
    """Every registered gateway as (site, gateway), sorted."""
    rows = await session.execute(
        select(Site.name, Gateway.name).join(Gateway.site).order_by(Site.name, Gateway.name)
    )
    return [(site, gateway) for site, gateway in rows]


async def add_site(session: AsyncSession, site: str, title: str = "") -> Site:
    """A new site, flushed; AlreadyRegistered if there is one of that name."""
    if await find_site(session, site) is not None:
        raise AlreadyRegistered(f"site {site!r} exists already")
    try:
        return await register_site(session, site, title)
    except IntegrityError:  # registered by someone else between the check and the insert
        raise AlreadyRegistered(f"site {site!r} exists already") from None


async def add_gateway(session: AsyncSession, site: str, gateway: str) -> Gateway:
    """A new gateway of an existing site, flushed; NotRegistered if there is no such site,
    AlreadyRegistered if the site has a gateway of that name."""
    if await find_site(session, site) is None:
        raise NotRegistered(f"no site {site!r}")
    if await find_gateway(session, site, gateway) is not None:
        raise AlreadyRegistered(f"gateway {gateway!r} of site {site!r} exists already")
    try:
        return await register_gateway(session, site, gateway)
    except IntegrityError:  # registered by someone else between the check and the insert
        raise AlreadyRegistered(f"gateway {gateway!r} of site {site!r} exists already") from None

"""Which version each gateway really runs, as the gateways report it: the version, slot and
SIO-1 firmware of their last ``ota/status`` (what they found themselves running at their
last start, never what they were told to run), where their update stands and why, for the
whole fleet or one site, optionally only the gateways on one version."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.models import Gateway, Site
from fleet.releases.tables import GatewayOta

#: how a gateway that has not sent an OTA status yet (or runs no version) is grouped
UNKNOWN = ""


@dataclass(frozen=True)
class RunningVersion:
    site: str
    gateway: str
    online: bool
    #: the version its OTA status says it runs, else the one its state message names (""
    #: unknown: it has reported neither)
    version: str
    slot: str  # "a", "b", "none" (not started by the launcher) or "" (not reported)
    firmware: str | None  # the SIO-1's firmware as the board answered; None unknown
    ota_state: str  # the gateway's word for where its update stands; "" before any
    progress: float | None
    reason: str
    reported_at: datetime | None  # when its OTA status came


@dataclass(frozen=True)
class FleetVersions:
    gateways: list[RunningVersion]  # at most the limit asked for
    matching: int  # how many gateways match the filter in all
    #: how many gateways run each version, the most common first (over the site, if one is
    #: chosen, before the version filter)
    counts: list[tuple[str, int]]
    sites: list[str]  # every site, for the filter


def _state(status: dict[str, Any] | None) -> tuple[str, float | None, str]:
    status = status or {}
    state = status.get("state")
    progress = status.get("progress")
    reason = status.get("reason")
    return (
        state if isinstance(state, str) else "",
        float(progress) if isinstance(progress, int | float) else None,
        reason if isinstance(reason, str) else "",
    )


def _running() -> ColumnElement[str]:
    """The version a gateway runs: its OTA status's, else its state message's, else ""."""
    return func.coalesce(
        func.nullif(GatewayOta.running_version, ""), func.nullif(Gateway.version, ""), UNKNOWN
    )


async def running_versions(
    session: AsyncSession,
    site: str | None = None,
    version: str | None = None,
    limit: int | None = None,
) -> FleetVersions:
    """Every gateway (of ``site``) by site and name, the first ``limit`` of them; ``version``
    keeps those running it (``""`` those whose version is unknown). Counted and limited in
    the database: a page of 100 out of thousands reads 100 statuses."""
    running = _running().label("running")
    of_site = [Site.name == site] if site else []
    counted = await session.execute(
        select(running, func.count())
        .select_from(Gateway)
        .join(Site, Gateway.site_id == Site.id)
        .outerjoin(GatewayOta, GatewayOta.gateway_id == Gateway.id)
        .where(*of_site)
        .group_by(running)
    )
    counts: dict[str, int] = {row[0]: row[1] for row in counted}
    query = (
        select(
            Site.name, Gateway.name, Gateway.online, running, GatewayOta.running_slot,
            GatewayOta.running_firmware, GatewayOta.status, GatewayOta.at,
        )
        .join(Gateway, Gateway.site_id == Site.id)
        .outerjoin(GatewayOta, GatewayOta.gateway_id == Gateway.id)
        .where(*of_site, *([] if version is None else [_running() == version]))
        .order_by(Site.name, Gateway.name)
        .limit(limit)
    )  # fmt: skip
    shown = []
    for row in await session.execute(query):
        site_name, name, online, runs, slot, firmware, status, at = row
        ota_state, progress, reason = _state(status)
        shown.append(
            RunningVersion(
                site=site_name, gateway=name, online=online, version=runs, slot=slot or "",
                firmware=firmware, ota_state=ota_state, progress=progress, reason=reason,
                reported_at=at,
            )
        )  # fmt: skip
    sites = list(await session.scalars(select(Site.name).order_by(Site.name)))
    return FleetVersions(
        gateways=shown,
        matching=sum(counts.values()) if version is None else counts.get(version, 0),
        counts=sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])),
        sites=sites,
    )

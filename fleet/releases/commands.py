"""OTA commands to gateways and what the gateways say back.

:func:`command_release` records an ``ota/command`` for one gateway (with a fresh download
token, stored as its hash), audits it — a forced downgrade under its own action — and
returns the payload to publish retained. :func:`status_route` is ingest's route for
``ota/status``: it keeps each gateway's latest status and the state of the command it is
about, and when the gateway's standing status is about an older command than the latest one
sent to it (a command lost while the broker was away), it sends that command again with a
new token, since what must arrive lives in the database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.accounts import audit
from fleet.accounts.credentials import digest, new_secret
from fleet.core.outbound import Outbound
from fleet.errors import NotRegistered, ReleaseNotFound
from fleet.ingest.ingest import GatewayRef, Route
from fleet.models import Gateway, Site, utcnow
from fleet.releases.tables import GatewayOta, OtaCommand, Release
from gateway import wire
from gateway.wire.ota import FINAL, OtaStatus
from gateway.wire.ota import OtaCommand as OtaCommandPayload

log = logging.getLogger(__name__)

#: a download token is refused this long after its command was sent
TOKEN_LIFETIME = timedelta(days=14)


def bundle_url(base_url: str, release: Release) -> str:
    return f"{base_url.rstrip('/')}/api/releases/{release.id}/bundle"


async def gateway_of(session: AsyncSession, site: str, name: str) -> Gateway:
    gateway = await session.scalar(
        select(Gateway).join(Site).where(Site.name == site, Gateway.name == name)
    )
    if gateway is None:
        raise NotRegistered(f"no gateway {name!r} in site {site!r}")
    return gateway


@dataclass(frozen=True)
class Sent:
    row: OtaCommand
    payload: bytes  # the encoded ota/command, token included: publish it, store it nowhere


async def command_release(
    session: AsyncSession,
    actor: str,
    gateway: Gateway,
    release: Release,
    base_url: str,
    *,
    force: bool = False,
) -> Sent:
    """Record an install command for ``gateway``; the caller commits, then publishes."""
    token = new_secret("ota_")
    row = OtaCommand(
        gateway_id=gateway.id,
        release_id=release.id,
        force=force,
        token_digest=digest(token),
        created_by=actor,
        payload={},
    )
    session.add(row)
    await session.flush()
    payload = _payload(row, release, base_url, token)
    row.payload = {**payload.model_dump(), "token": ""}
    action = "ota.downgrade" if force else "ota.install"
    audit.record(
        session, actor, action, f"gateway:{gateway.id}",
        {"release": release.version, "platform": release.platform, "command": row.id,
         "forced": force},
    )  # fmt: skip
    return Sent(row, wire.encode(payload))


def _payload(row: OtaCommand, release: Release, base_url: str, token: str) -> OtaCommandPayload:
    return OtaCommandPayload(
        id=row.id,
        release=release.version,
        url=bundle_url(base_url, release),
        token=token,
        size=release.size,
        sha256=release.sha256,
        force=row.force,
        at=time.time(),
    )


async def release_for_token(session: AsyncSession, release_id: int, token: str) -> bool:
    """Whether ``token`` is a live download token for ``release_id``."""
    row = await session.scalar(select(OtaCommand).where(OtaCommand.token_digest == digest(token)))
    return (
        row is not None
        and row.release_id == release_id
        and utcnow() - row.created_at <= TOKEN_LIFETIME
    )


async def latest_command(session: AsyncSession, gateway_id: int) -> OtaCommand | None:
    return await session.scalar(
        select(OtaCommand)
        .where(OtaCommand.gateway_id == gateway_id)
        .order_by(OtaCommand.id.desc())
        .limit(1)
    )


def status_route(outbound: Callable[[], Outbound | None]) -> Route:
    """Ingest's route for ``ota/status``; ``outbound()`` is the fleet's sender (None without
    a broker), looked up per message because it starts after ingest is composed."""

    async def route(session: AsyncSession, gateway: GatewayRef, message: wire.Payload) -> None:
        assert isinstance(message, OtaStatus)
        now = utcnow()
        row = await session.get(GatewayOta, gateway.id)
        if row is None:
            row = GatewayOta(gateway_id=gateway.id, status={})
            session.add(row)
        row.status = message.model_dump(mode="json")
        row.running_version = message.running.version[:32]
        row.running_slot = message.running.slot
        row.running_firmware = message.running.firmware
        row.at = now
        latest = await latest_command(session, gateway.id)
        if message.command is not None:
            command = await session.get(OtaCommand, message.command)
            if command is not None and command.gateway_id == gateway.id:
                command.state = message.state.value
                command.progress = message.progress
                command.reason = message.reason
                command.status_at = now
        if (
            latest is not None
            and (message.command is None or message.command < latest.id)
            and latest.state not in FINAL
            and (sender := outbound()) is not None
        ):
            await _resend(session, sender, gateway, latest)

    return route


async def _resend(
    session: AsyncSession, outbound: Outbound, gateway: GatewayRef, command: OtaCommand
) -> None:
    release = await session.get(Release, command.release_id)
    if release is None:
        raise ReleaseNotFound(f"release {command.release_id} of command {command.id} is gone")
    token = new_secret("ota_")
    command.token_digest = digest(token)
    payload = OtaCommandPayload.model_validate(
        {**command.payload, "token": token, "at": time.time()}
    )
    log.info("ota: command %d to %s/%s again", command.id, gateway.site, gateway.name)
    await outbound.send(
        gateway.site, gateway.name, wire.Kind.OTA_COMMAND, wire.encode(payload), retain=True
    )

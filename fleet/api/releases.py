"""Releases: upload a signed bundle (operator), list them, serve a bundle to gateways (with
Range, for downloads that resume), send a release to a gateway and read its OTA status."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy import select

from fleet.accounts.actor import Actor
from fleet.accounts.tokens import token_actor
from fleet.api.deps import ActorDep, RowId, SessionDep, SettingsDep, role
from fleet.errors import ReleaseNotFound
from fleet.models import Role
from fleet.releases.commands import command_release, gateway_of, release_for_token
from fleet.releases.store import BundleStore, add_release, find_release, list_releases, releases_dir
from fleet.releases.tables import GatewayOta, OtaCommand, Release
from gateway import wire

router = APIRouter(tags=["releases"])
Operator = Annotated[Actor, role(Role.OPERATOR, "uploading and sending releases")]
_bearer = HTTPBearer(auto_error=False, description="a gateway's download token, or an API token")


class ReleaseInfo(BaseModel):
    id: int
    version: str
    min_version: str
    platform: str
    python: str
    firmware: str | None
    key_id: str
    size: int
    sha256: str
    uploaded_at: datetime
    uploaded_by: str

    @classmethod
    def of(cls, r: Release) -> ReleaseInfo:
        return cls(
            id=r.id, version=r.version, min_version=r.min_version, platform=r.platform,
            python=r.python, firmware=r.firmware, key_id=r.key_id, size=r.size,
            sha256=r.sha256, uploaded_at=r.uploaded_at, uploaded_by=r.uploaded_by,
        )  # fmt: skip


class SendRelease(BaseModel):
    version: str = Field(pattern=r"^\d+(\.\d+){0,3}$")
    platform: str | None = None
    force: bool = Field(default=False, description="allow a downgrade (audited)")


class CommandInfo(BaseModel):
    id: int
    release: str
    force: bool
    state: str
    progress: float | None
    reason: str
    created_at: datetime
    created_by: str


class GatewayOtaInfo(BaseModel):
    status: dict[str, Any] | None
    commands: list[CommandInfo]


BUNDLE = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


@router.post(
    "/releases",
    status_code=201,
    openapi_extra={"requestBody": {"required": True, "content": BUNDLE}},
)
async def upload(
    request: Request, actor: Operator, session: SessionDep, settings: SettingsDep
) -> ReleaseInfo:
    """The request body is the bundle (``fleet release build``), signed."""
    store = BundleStore(releases_dir(settings))
    received = await store.receive(request.stream())
    release = await add_release(session, received, actor.label)
    await session.commit()
    return ReleaseInfo.of(release)


@router.get("/releases")
async def releases(_actor: ActorDep, session: SessionDep) -> list[ReleaseInfo]:
    return [ReleaseInfo.of(r) for r in await list_releases(session)]


@router.get("/releases/{release_id}/bundle")
async def bundle(
    release_id: RowId,
    session: SessionDep,
    settings: SettingsDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> FileResponse:
    """The bundle's bytes; a ``Range`` request gets the part asked for (206). Only for a
    gateway holding a download token of a command for this release, or an API token."""
    if bearer is None:
        raise HTTPException(401, "a download token is needed", {"WWW-Authenticate": "Bearer"})
    allowed = await release_for_token(session, release_id, bearer.credentials)
    if not allowed and await token_actor(session, bearer.credentials) is None:
        raise HTTPException(403, "this token does not open this release")
    release = await session.get(Release, release_id)
    if release is None:
        raise ReleaseNotFound(f"no release {release_id}")
    path = BundleStore(releases_dir(settings)).path(release.sha256)
    if not path.is_file():
        raise ReleaseNotFound(f"release {release.version}: its bundle is missing on the fleet")
    return FileResponse(path, media_type="application/x-tar", filename=f"{release.version}.tar")


@router.post("/sites/{site}/gateways/{gateway}/ota", status_code=201)
async def send_release(
    site: str,
    gateway: str,
    order: SendRelease,
    request: Request,
    actor: Operator,
    session: SessionDep,
    settings: SettingsDep,
) -> CommandInfo:
    """Tell a gateway to install a release (``force``: even if older than what it runs)."""
    target = await gateway_of(session, site, gateway)
    release = await find_release(session, order.version, order.platform)
    base = settings.public_url or str(request.base_url)
    sent = await command_release(session, actor.label, target, release, base, force=order.force)
    await session.commit()
    outbound = request.app.state.outbound
    if outbound is not None:  # best effort: the gateway's status brings it back otherwise
        await outbound.send(site, gateway, wire.Kind.OTA_COMMAND, sent.payload, retain=True)
    return _command_info(sent.row, release)


@router.get("/sites/{site}/gateways/{gateway}/ota")
async def gateway_ota(
    site: str, gateway: str, _actor: ActorDep, session: SessionDep
) -> GatewayOtaInfo:
    target = await gateway_of(session, site, gateway)
    status = await session.get(GatewayOta, target.id)
    rows = (
        await session.execute(
            select(OtaCommand, Release)
            .join(Release, OtaCommand.release_id == Release.id)
            .where(OtaCommand.gateway_id == target.id)
            .order_by(OtaCommand.id.desc())
            .limit(20)
        )
    ).all()
    return GatewayOtaInfo(
        status=None if status is None else status.status,
        commands=[_command_info(c, r) for c, r in rows],
    )


def _command_info(row: OtaCommand, release: Release) -> CommandInfo:
    return CommandInfo(
        id=row.id, release=release.version, force=row.force, state=row.state,
        progress=row.progress, reason=row.reason, created_at=row.created_at,
        created_by=row.created_by,
    )  # fmt: skip

"""``/api/gateways/{site}/{gateway}/config`` and ``/api/config/bulk``: versions, desired vs
reported, diff, revert, tags and bulk changes. Reading: any role; pushing, reverting, tagging
and bulk changes: operator and admin. Every change is audited. A version made here is signed
with the fleet's key file (``fleet serve --config-signing-key``) when it has one, or carries a
signature made offline (``signature``, from ``fleet config sign``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from fleet.accounts.actor import Actor
from fleet.api.deps import ActorDep, SessionDep, role
from fleet.config import bulk, versions
from fleet.config.signing import DetachedSignature, fleet_key
from fleet.config.tags import set_tags
from fleet.config.versions import ConfigState, VersionDetail, VersionView
from fleet.models import Role
from gateway.trust import SigningKey

router = APIRouter(tags=["configuration"])
Operator = Annotated[Actor, role(Role.OPERATOR, "changing configurations")]
BASE = "/gateways/{site}/{gateway}/config"


class NewVersion(BaseModel):
    document: str = Field(max_length=200 * 1024, description="the whole site TOML")
    comment: str = Field(default="", max_length=500)
    confirm_safety_change: bool = False
    signature: DetachedSignature | None = Field(
        default=None, description="made offline by `fleet config sign` for this version"
    )


class Revert(BaseModel):
    version: int = Field(ge=1)
    comment: str = Field(default="", max_length=500)
    confirm_safety_change: bool = False


class Tags(BaseModel):
    tags: list[str] = Field(max_length=50)


class BulkChange(bulk.Selection):
    fragment: str = Field(max_length=64 * 1024, description="a TOML fragment (merge rules)")
    comment: str = Field(default="", max_length=500)
    confirm_safety_change: bool = False


class BulkResult(BaseModel):
    lines: list[bulk.BulkLine]
    applied: int
    refused: int


class Diff(BaseModel):
    a: int
    b: int
    diff: str


def _signer(request: Request) -> SigningKey | None:
    return fleet_key(request.app.state.settings.config_signing_key)


def _wake(request: Request) -> None:
    delivery = getattr(request.app.state, "config_delivery", None)
    if delivery is not None:
        delivery.wake()


@router.get(BASE)
async def get_state(site: str, gateway: str, _a: ActorDep, session: SessionDep) -> ConfigState:
    return await versions.state(session, site, gateway)


@router.get(BASE + "/versions")
async def get_history(
    site: str, gateway: str, _a: ActorDep, session: SessionDep
) -> list[VersionView]:
    return await versions.history(session, site, gateway)


@router.get(BASE + "/versions/{number}")
async def get_version(
    site: str, gateway: str, number: int, _a: ActorDep, session: SessionDep
) -> VersionDetail:
    return await versions.show(session, site, gateway, number)


@router.get(BASE + "/diff")
async def get_diff(
    site: str,
    gateway: str,
    a: Annotated[int, Query(ge=1)],
    b: Annotated[int, Query(ge=1)],
    _a: ActorDep,
    session: SessionDep,
) -> Diff:
    return Diff(a=a, b=b, diff=await versions.diff(session, site, gateway, a, b))


@router.post(BASE + "/versions", status_code=201)
async def post_version(
    site: str,
    gateway: str,
    new: NewVersion,
    actor: Operator,
    session: SessionDep,
    request: Request,
) -> VersionView:
    view = await versions.push(
        session,
        site,
        gateway,
        new.document,
        author=actor.label,
        comment=new.comment,
        confirm_safety=new.confirm_safety_change,
        signer=None if new.signature is not None else _signer(request),
        signature=new.signature,
    )
    await session.commit()
    _wake(request)
    return view


@router.post(BASE + "/revert", status_code=201)
async def post_revert(
    site: str, gateway: str, body: Revert, actor: Operator, session: SessionDep, request: Request
) -> VersionView:
    view = await versions.revert(
        session,
        site,
        gateway,
        body.version,
        author=actor.label,
        comment=body.comment,
        confirm_safety=body.confirm_safety_change,
        signer=_signer(request),
    )
    await session.commit()
    _wake(request)
    return view


@router.put(BASE + "/tags")
async def put_tags(
    site: str, gateway: str, body: Tags, actor: Operator, session: SessionDep
) -> Tags:
    tags = await set_tags(session, site, gateway, body.tags, actor.label)
    await session.commit()
    return Tags(tags=tags)


@router.post("/config/bulk/preview")
async def post_bulk_preview(
    body: BulkChange, _actor: Operator, session: SessionDep
) -> list[bulk.BulkLine]:
    return await bulk.preview(session, body, body.fragment)


@router.post("/config/bulk")
async def post_bulk(
    body: BulkChange, actor: Operator, session: SessionDep, request: Request
) -> BulkResult:
    lines = await bulk.apply(
        session,
        body,
        body.fragment,
        author=actor.label,
        comment=body.comment,
        confirm_safety=body.confirm_safety_change,
        signer=_signer(request),
    )
    await session.commit()
    _wake(request)
    applied = sum(1 for line in lines if line.version is not None)
    return BulkResult(lines=lines, applied=applied, refused=len(lines) - applied)

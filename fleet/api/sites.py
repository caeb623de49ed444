"""Sites and their gateways: list, register (operator and above), one site in detail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from fleet.accounts import audit
from fleet.accounts.actor import Actor
from fleet.api.deps import ActorDep, SessionDep, role
from fleet.models import Role
from fleet.queries.gateways import GatewaySummary, summaries
from fleet.queries.overview import SiteListing, site_listing
from fleet.queries.site import SiteDetail, site_detail
from fleet.registry import add_gateway, add_site

router = APIRouter(tags=["sites"])
Operator = Annotated[Actor, role(Role.OPERATOR, "registering sites and gateways")]


class NewSite(BaseModel):
    name: str = Field(description="lower-case letters, digits and dashes (a topic level)")
    title: str = Field(default="", max_length=200)


class NewGateway(BaseModel):
    name: str = Field(description="lower-case letters, digits and dashes (a topic level)")


@router.get("/sites")
async def list_sites(_actor: ActorDep, session: SessionDep) -> list[SiteListing]:
    return await site_listing(session)


@router.post("/sites", status_code=201)
async def create_site(new: NewSite, actor: Operator, session: SessionDep) -> SiteListing:
    site = await add_site(session, new.name, new.title)
    audit.record(session, actor.label, "site.create", f"site:{site.name}", {"title": site.title})
    await session.commit()
    return SiteListing(name=site.name, title=site.title, gateways=0)


@router.post("/sites/{site}/gateways", status_code=201)
async def create_gateway(
    site: str, new: NewGateway, actor: Operator, session: SessionDep
) -> GatewaySummary:
    """Register a gateway: ingest accepts its messages from now on."""
    gateway = await add_gateway(session, site, new.name)
    audit.record(session, actor.label, "gateway.create", f"gateway:{site}/{gateway.name}")
    await session.commit()
    return next(line.summary for line in await summaries(session, site) if line.id == gateway.id)


@router.get("/sites/{site}")
async def get_site(site: str, _actor: ActorDep, session: SessionDep) -> SiteDetail:
    detail = await site_detail(session, site)
    if detail is None:
        raise HTTPException(404, f"no site {site!r}")
    return detail

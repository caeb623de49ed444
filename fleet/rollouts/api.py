"""``/api/rollouts``: create (with a preview first), watch, pause, resume, abort. Reading: any
role; everything else: operator and admin, audited."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from fleet.accounts.actor import Actor
from fleet.api.deps import ActorDep, SessionDep, role
from fleet.models import Role
from fleet.rollouts import service
from fleet.rollouts.service import NewRollout, PreviewView, RolloutView

router = APIRouter(prefix="/rollouts", tags=["rollouts"])
windows = APIRouter(prefix="/sites", tags=["rollouts"])
Operator = Annotated[Actor, role(Role.OPERATOR, "running rollouts")]


class Reason(BaseModel):
    reason: str = Field(default="", max_length=500)


class Acted(BaseModel):
    rollout: RolloutView
    #: gateways an abort-revert could not send back, and why
    problems: list[str] = Field(default_factory=list)


def _wake(request: Request) -> None:  # the driver decides at once
    driver = getattr(request.app.state, "rollouts", None)
    if driver is not None:
        driver.wake()


@router.get("")
async def list_rollouts(_a: ActorDep, session: SessionDep) -> list[RolloutView]:
    return await service.listing(session)


@router.post("/preview")
async def preview(new: NewRollout, _a: Operator, session: SessionDep) -> PreviewView:
    """Who would be in which phase if it started now."""
    return await service.preview(session, new)


@router.post("", status_code=201)
async def create(
    new: NewRollout, actor: Operator, session: SessionDep, request: Request
) -> RolloutView:
    settings = request.app.state.settings
    base = settings.public_url or str(request.base_url)
    record = await service.create(session, actor, new, base)
    await session.commit()
    _wake(request)
    return await service.view(session, record)


@router.get("/{ref}")
async def show(ref: str, _a: ActorDep, session: SessionDep) -> RolloutView:
    return await service.view(session, await service.record_of(session, ref))


@router.post("/{ref}/{action}")
async def act(
    ref: str,
    action: service.Action,
    body: Reason,
    actor: Operator,
    session: SessionDep,
    request: Request,
) -> Acted:
    """``pause``, ``resume``, ``abort``, or ``abort-revert`` (the gateways that took the
    release are asked to go back to the version they ran before)."""
    record, commands = await service.act(session, actor, ref, action, body.reason)
    publishes, problems = await service.reverts(session, record, commands, record.base_url)
    await session.commit()
    driver = getattr(request.app.state, "rollouts", None)
    if driver is not None:
        await driver.publish(publishes)
        driver.wake()
    return Acted(rollout=await service.view(session, record), problems=problems)


class WindowChange(BaseModel):
    maintenance_window: str = Field(default="", max_length=11, description="HH:MM-HH:MM or empty")
    timezone: str = Field(default="UTC", max_length=64, description="an IANA time zone")


@windows.put("/{site}/maintenance-window")
async def put_window(
    site: str, change: WindowChange, actor: Operator, session: SessionDep
) -> service.WindowView:
    """When rollouts may update the site, in its own time zone."""
    view = await service.set_window(
        session, actor, site, change.maintenance_window, change.timezone
    )
    await session.commit()
    return view

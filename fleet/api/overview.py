"""The whole fleet on one screen."""

from __future__ import annotations

from fastapi import APIRouter

from fleet.api.deps import ActorDep, SessionDep
from fleet.queries.overview import Overview, overview

router = APIRouter(tags=["overview"])


@router.get("/overview")
async def get_overview(_actor: ActorDep, session: SessionDep) -> Overview:
    return await overview(session)

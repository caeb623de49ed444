"""Ingest counters: messages accepted by kind, rejected by reason, duplicates, gaps."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from fleet.api.deps import ActorDep, SessionDep
from fleet.ingest.repair import gaps

router = APIRouter(tags=["ingest"])


@router.get("/ingest")
async def ingest_stats(_actor: ActorDep, session: SessionDep, request: Request) -> dict[str, Any]:
    """The counters, and the gaps: open (being repaired) and lost (the gateway no longer had
    them), each with its gateway and range of batch numbers."""
    stats: dict[str, Any] = request.app.state.ingest.stats()
    return stats | {"gaps": await gaps(session)}

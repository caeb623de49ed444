"""Ingest counters: messages accepted by kind, rejected by reason, duplicates, gaps."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from fleet.api.deps import ActorDep

router = APIRouter(tags=["ingest"])


@router.get("/ingest")
async def ingest_stats(_actor: ActorDep, request: Request) -> dict[str, Any]:
    stats: dict[str, Any] = request.app.state.ingest.stats()
    return stats

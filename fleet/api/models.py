"""The device catalog: what the fleet knows of each device model, from the gateway's profiles
(labels, units, what each state value means, which values are alarm states, which points
people see). English; the screens translate it."""

from __future__ import annotations

from fastapi import APIRouter

from fleet.api.deps import ActorDep
from fleet.catalog import ModelInfo, catalog

router = APIRouter(tags=["models"])


@router.get("/models")
async def list_models(_actor: ActorDep) -> dict[str, ModelInfo]:
    """Every device model with a profile, by model name."""
    return catalog()

"""The audit log (admin only), newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fleet.accounts import audit
from fleet.accounts.actor import Actor
from fleet.api.deps import SessionDep, role
from fleet.models import Role

router = APIRouter(tags=["audit"])


@router.get("/audit")
async def list_audit(
    _actor: Annotated[Actor, role(Role.ADMIN, "reading the audit log")],
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
) -> list[audit.AuditView]:
    return await audit.recent(session, limit)

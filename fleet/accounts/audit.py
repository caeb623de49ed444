"""The audit log: who changed what, written in the same transaction as the change itself.

Actors are spelled ``user:NAME`` (a browser login), ``token:TOKEN@USER`` (an API token) and
``cli:UNIXUSER`` (the ``fleet`` command line). :func:`record` only adds the entry to the
caller's session, so the change and its entry commit or roll back together.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.models import AuditEntry, utcnow


class AuditView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


def record(
    session: AsyncSession,
    actor: str,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    """Add one entry to ``session``; it commits with the change it describes."""
    entry = AuditEntry(at=utcnow(), actor=actor, action=action, target=target, detail=detail or {})
    session.add(entry)
    return entry


async def recent(session: AsyncSession, limit: int) -> list[AuditView]:
    """The newest ``limit`` entries, newest first."""
    rows = await session.scalars(
        select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
    )
    return [AuditView.model_validate(row) for row in rows]

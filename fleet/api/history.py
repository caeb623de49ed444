"""A point's history, downsampled into time buckets for a plot."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from fleet.api.deps import ActorDep, SessionDep
from fleet.models import utcnow
from fleet.queries.history import MAX_BUCKETS, History, device_id, history

router = APIRouter(tags=["history"])
DEFAULT_SPAN = timedelta(hours=1)


def _aware(name: str, value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise HTTPException(
            422, f"{name}: expected an ISO 8601 time with a zone, e.g. 2025-01-31T12:00:00Z"
        )
    return value


@router.get("/history")
async def get_history(
    _actor: ActorDep,
    session: SessionDep,
    site: str,
    gateway: str,
    device: str,
    point: str,
    since: Annotated[datetime | None, Query(description="ISO 8601; default until - 1 h")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601; default now")] = None,
    buckets: Annotated[int, Query(ge=1, le=MAX_BUCKETS)] = 200,
) -> History:
    """min/max/avg/n of the point's numeric samples in at most ``buckets`` buckets of
    [since, until); empty buckets are left out, ``t`` is each bucket's start."""
    end = _aware("until", until) or utcnow()
    start = _aware("since", since) or end - DEFAULT_SPAN
    if start >= end:
        raise HTTPException(
            422, f"since ({start.isoformat()}) must be before until ({end.isoformat()})"
        )
    found = await device_id(session, site, gateway, device)
    if found is None:
        raise HTTPException(404, f"no device {device!r} on gateway {site}/{gateway}")
    width, series = await history(session, found, point, start, end, buckets)
    return History(
        site=site, gateway=gateway, device=device, point=point, since=start, until=end,
        bucket_seconds=width, series=series,
    )  # fmt: skip

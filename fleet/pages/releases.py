"""The releases screen: the signed releases uploaded to the fleet, and which version each
gateway really runs (as the gateways report it), filterable by site and version. Anyone may
look; an operator gets a link to roll a release out (``/rollouts/new``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from fleet.api.deps import SessionDep
from fleet.models import Role
from fleet.pages.person import Person, PersonDep, here
from fleet.pages.templating import screen
from fleet.queries.versions import UNKNOWN, running_versions
from fleet.releases.store import list_releases

router = APIRouter(include_in_schema=False)
#: the version filter's choice for gateways that have not said what they run
UNKNOWN_CHOICE = "unknown"
#: the most gateways the list shows (the counts above it cover them all; a site or a version
#: narrows it): a thousand rows are neither read by a person nor quick to draw
SHOWN = 100


def may_roll_out(person: Person) -> bool:
    """Creating, pausing, resuming and aborting rollouts: the operator role and above."""
    return person.actor.role.rank >= Role.OPERATOR.rank


def context(person: Person, request: Request, nav: str, **more: Any) -> dict[str, Any]:
    """What every release and rollout screen gets."""
    return {
        "person": person, "request": request, "nav": nav, "here": here(request),
        "now": datetime.now(UTC), "may_roll_out": may_roll_out(person), **more,
    }  # fmt: skip


@router.get("/releases")
async def releases_page(
    request: Request,
    person: PersonDep,
    session: SessionDep,
    site: str = "",
    version: str = "",
) -> Response:
    """``version``: only the gateways running it (``unknown``: those that have not said);
    empty: every gateway."""
    chosen = None if not version else UNKNOWN if version == UNKNOWN_CHOICE else version
    fleet = await running_versions(session, site or None, chosen, SHOWN)
    found = context(
        person, request, "releases", releases=list(await list_releases(session)),
        fleet=fleet, site=site, version=version, unknown=UNKNOWN_CHOICE,
    )  # fmt: skip
    return screen(request, person.language, "releases.html", "releases_live.html", found)

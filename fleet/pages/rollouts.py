"""The rollout screens: every rollout with its state and progress, a new rollout (release,
targets, phases, thresholds, rate limit) with a preview of who is in which phase, and one
rollout live — each phase's gateways pending, waiting and why, downloading, installing,
committed, rolled back or failed and why — with pause, resume and abort.

The pages only read (:mod:`fleet.rollouts.service`, the same views as ``/api/rollouts``);
previewing, creating, pausing, resuming and aborting are the JSON API's (fleet.js sends the
forms there), which checks the operator role and audits each action. The engine's reasons
are English sentences for the API and the CLI; :func:`explain` says the ones it knows in the
person's language.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.api.deps import SessionDep
from fleet.config.tables import GatewayTag
from fleet.errors import RolloutError
from fleet.i18n.catalogue import translations
from fleet.models import Site, utcnow
from fleet.pages.person import PersonDep
from fleet.pages.releases import context
from fleet.pages.templating import screen
from fleet.releases.store import list_releases
from fleet.rollouts import service
from fleet.rollouts.windows import Window

router = APIRouter(include_in_schema=False)
Translate = Callable[[str], str]

_PHASE_FAILED = re.compile(r"^phase (.+): (\d+) of (\d+) failed \(allowed (\d+)\): (.*)$", re.S)
#: an operator's pause or abort, by an audit actor ("user:NAME", "token:ID@USER", "cli:NAME")
_BY = re.compile(r"^(paused|aborted) by ((?:user|token|cli):[^:\s]+)(?:: (.*))?$", re.S)
_TIMED_OUT = re.compile(r"^timed out after ([\d.e+]+) s$")
_ACCEPTED = " (accepted on resume)"


def explain(reason: str, _: Translate) -> str:
    """An engine's or operator's reason in the person's language where it is one the engine
    writes; anything else (a gateway's own sentence) as it is."""
    if reason.endswith(_ACCEPTED):
        inner = explain(reason[: -len(_ACCEPTED)], _)
        return _("%(reason)s (accepted on resume)") % {"reason": inner}
    if found := _PHASE_FAILED.match(reason):
        name, failed, size, allowed, who = found.groups()
        words = _("phase %(phase)s: %(failed)s of %(size)s failed (%(allowed)s allowed): %(who)s")
        return words % {
            "phase": name, "failed": failed, "size": size, "allowed": allowed, "who": who,
        }  # fmt: skip
    if found := _BY.match(reason):
        action, who, why = found.groups()
        words = _("paused by %(name)s") if action == "paused" else _("aborted by %(name)s")
        said = words % {"name": who}
        return f"{said}: {why}" if why else said
    if found := _TIMED_OUT.match(reason):
        return _("timed out after %(seconds)s s") % {"seconds": found.group(1)}
    return reason


#: the most gateways of a phase listed one per line (those that need a look first); the
#: committed ones are listed by name under a fold
LISTED = 50
#: the order a phase's gateways are listed in: failures first, then those on their way
_ORDER = {"failed": 0, "commanded": 1, "pending": 2}


@dataclass(frozen=True)
class PhaseLines:
    """One phase as its page lists it."""

    phase: service.PhaseView
    listed: list[service.MemberView]  # failed, updating, waiting and pending: LISTED at most
    unlisted: int  # how many more of those
    done: list[str]  # committed, by name


def lines(phase: service.PhaseView) -> PhaseLines:
    looked_at = sorted(
        (m for m in phase.gateways if m.progress in _ORDER),
        key=lambda m: (_ORDER[m.progress], not m.waiting, m.gateway),
    )
    return PhaseLines(
        phase=phase,
        listed=looked_at[:LISTED],
        unlisted=max(0, len(looked_at) - LISTED),
        done=[m.gateway for m in phase.gateways if m.progress == "done"],
    )


@router.get("/rollouts")
async def rollouts_page(request: Request, person: PersonDep, session: SessionDep) -> Response:
    _ = translations(person.language).gettext
    found = context(
        person, request, "rollouts", rollouts=await service.listing(session),
        explain=lambda reason: explain(reason, _),
    )  # fmt: skip
    return screen(request, person.language, "rollouts.html", "rollouts_live.html", found)


@dataclass(frozen=True)
class SiteWindow:
    site: str
    window: str  # "HH:MM-HH:MM" or "" (any time)
    timezone: str
    open_now: bool | None  # None: a window nobody can read (never open)


async def site_windows(session: AsyncSession, now: datetime) -> list[SiteWindow]:
    """Every site's maintenance window and whether it is open now."""
    out = []
    rows = await session.execute(
        select(Site.name, Site.maintenance_window, Site.timezone).order_by(Site.name)
    )
    for name, window, zone in rows:
        try:
            open_now: bool | None = Window.parse(window, zone).contains(now)
        except RolloutError:
            open_now = None
        out.append(SiteWindow(name, window, zone, open_now))
    return out


@router.get("/rollouts/new")
async def new_rollout_page(
    request: Request, person: PersonDep, session: SessionDep, release: int | None = None
) -> Response:
    tags = await session.scalars(select(GatewayTag.tag).distinct().order_by(GatewayTag.tag))
    found = context(
        person, request, "rollouts", releases=list(await list_releases(session)),
        release=release, windows=await site_windows(session, utcnow()), tags=list(tags),
    )  # fmt: skip
    return screen(request, person.language, "rollouts_new.html", "rollouts_new_live.html", found)


@router.get("/rollouts/{ref}")
async def rollout_page(
    ref: str, request: Request, person: PersonDep, session: SessionDep
) -> Response:
    _ = translations(person.language).gettext
    view = await service.view(session, await service.record_of(session, ref))
    found = context(
        person, request, "rollouts", rollout=view, phases=[lines(p) for p in view.phases],
        explain=lambda reason: explain(reason, _),
    )  # fmt: skip
    return screen(request, person.language, "rollouts_show.html", "rollouts_show_live.html", found)

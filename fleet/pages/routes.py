"""The screens: overview, site, alarms, history, login, and choosing a language."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import update

from fleet.accounts.logins import session_actor
from fleet.api.deps import COOKIE, SessionDep
from fleet.catalog import Shape, model
from fleet.i18n.catalogue import translations
from fleet.i18n.formats import Formats
from fleet.i18n.negotiate import language
from fleet.models import User, utcnow
from fleet.pages.person import LANG_COOKIE, Person, PersonDep, browser_language, here
from fleet.pages.present import card
from fleet.pages.templating import render, screen
from fleet.queries.alarms import AlarmGroup, AlarmState, alarms, by_cause
from fleet.queries.attention import attention
from fleet.queries.gaps import lost_gaps
from fleet.queries.history import device_id, history
from fleet.queries.site import site_detail
from fleet.queries.states import state_history

router = APIRouter(include_in_schema=False)

#: The spans a history plot offers, by the name in its URL.
RANGES = {"1h": timedelta(hours=1), "6h": timedelta(hours=6), "24h": timedelta(days=1),
          "7d": timedelta(days=7)}  # fmt: skip
PLOT_BUCKETS = 300
#: How long a person may shelve an alarm for, from the alarm list.
SHELF_MINUTES = (30, 60, 4 * 60, 8 * 60, 24 * 60, 3 * 24 * 60, 7 * 24 * 60)


def _common(person: Person, request: Request, nav: str) -> dict[str, Any]:
    return {"person": person, "request": request, "nav": nav, "here": here(request),
            "now": datetime.now(UTC)}  # fmt: skip


@router.get("/login")
async def login_page(request: Request, next: str = "/") -> HTMLResponse:
    lang = browser_language(request)
    back = _safe_next(next)
    context = {"next": back, "person": None, "nav": "", "here": f"/login?next={quote(back)}"}
    body = render(lang, "login.html", context)
    return HTMLResponse(body)


@router.get("/")
async def overview(request: Request, person: PersonDep, session: SessionDep) -> Response:
    sites = await attention(session)
    context = _common(person, request, "overview") | {
        "needing": [s for s in sites if s.needs_a_person],
        "fine": [s for s in sites if not s.needs_a_person],
        "broker_url": _broker_url(request),
    }
    return screen(request, person.language, "overview.html", "overview_live.html", context)


@router.get("/sites/{site}")
async def site(site: str, request: Request, person: PersonDep, session: SessionDep) -> Response:
    detail = await site_detail(session, site)
    if detail is None:
        raise HTTPException(404, f"no site {site!r}")
    fmt = Formats(person.language)
    _ = translations(person.language).gettext
    gateways = [(gw, [card(d, fmt, _) for d in gw.devices]) for gw in detail.gateways]
    open_alarms = await alarms(session, AlarmState.OPEN, site, 200, utcnow())
    context = _common(person, request, "sites") | {
        "site": detail, "gateways": gateways, "alarms": open_alarms,
        "lost": await lost_gaps(session, site),
    }  # fmt: skip
    return screen(request, person.language, "site.html", "site_live.html", context)


@router.get("/alarms")
async def alarm_list(
    request: Request,
    person: PersonDep,
    session: SessionDep,
    state: AlarmState = AlarmState.OPEN,
    site: str | None = None,
) -> Response:
    found = await by_cause(session, state, site or None, 500, utcnow())
    fmt = Formats(person.language)
    context = _common(person, request, "alarms") | {
        "alarms": found, "state": state, "site": site or "", "newest": _newest(found),
        "shelf_spans": [(m, fmt.duration(timedelta(minutes=m), exact=True)) for m in SHELF_MINUTES],
    }  # fmt: skip
    return screen(request, person.language, "alarms.html", "alarms_live.html", context)


@router.get("/history")
async def history_page(
    request: Request,
    person: PersonDep,
    session: SessionDep,
    site: str = "",
    gateway: str = "",
    device: str = "",
    point: str = "",
    range: Annotated[str, Query(pattern="^(1h|6h|24h|7d)$")] = "1h",
) -> Response:
    _ = translations(person.language).gettext
    detail = await site_detail(session, site) if site else None
    devices = (
        [(gw.name, d) for gw in detail.gateways for d in gw.devices] if detail is not None else []
    )
    chosen = next(
        ((gw, d) for gw, d in devices if d.name == device and (gw == gateway or not gateway)),
        None,
    )
    points: list[tuple[str, str]] = []
    plot: dict[str, Any] | None = None
    if chosen is not None:
        gateway, dev = chosen
        info = model(dev.model)
        for name in dev.points:
            p = info.points.get(name) if info else None
            if p is None or (p.visible and p.shape in (Shape.NUMBER, Shape.STATE)):
                points.append((name, _(p.label) if p else name))
        if point in dict(points):
            plot = await _plot(session, site, gateway, dev.name, point, RANGES[range], _, info)
    context = _common(person, request, "history") | {
        "sites": await _site_names(session), "site": site, "gateway": gateway,
        "devices": devices, "device": device, "points": points, "point": point,
        "range": range, "ranges": list(RANGES), "plot": plot,
    }  # fmt: skip
    return screen(request, person.language, "history.html", None, context)


def _newest(groups: list[AlarmGroup]) -> int:
    """The newest alarm id on the list, causes and what follows from them: acknowledging
    all of a site acknowledges none that arrived after the person saw the list."""
    return max((max(g.id, _newest(g.suppressed)) for g in groups), default=0)


async def _site_names(session: SessionDep) -> list[tuple[str, str]]:
    return [(s.name, s.title or s.name) for s in await attention(session)]


async def _plot(
    session: SessionDep,
    site: str,
    gateway: str,
    device: str,
    point: str,
    span: timedelta,
    _: Any,
    info: Any,
) -> dict[str, Any] | None:
    """What plot.js draws: the min/max band and average of a number, steps of a state."""
    found = await device_id(session, site, gateway, device)
    if found is None:
        return None
    until = datetime.now(UTC)
    since = until - span
    p = info.points.get(point) if info else None
    label = _(p.label) if p else point
    if p is not None and p.shape is Shape.STATE:
        states = await state_history(session, found, point, since, until)
        return {
            "kind": "state", "label": label, "since": since.timestamp(),
            "until": until.timestamp(), "initial": states.initial,
            "t": [c.t.timestamp() for c in states.changes],
            "v": [c.value for c in states.changes],
            "labels": {str(k): _(v) for k, v in p.values.items()},
            "truncated": states.truncated,
        }  # fmt: skip
    _width, series = await history(session, found, point, since, until, PLOT_BUCKETS)
    return {
        "kind": "number", "label": label, "unit": _(p.unit) if p and p.unit else "",
        "since": since.timestamp(), "until": until.timestamp(),
        "t": [b.t.timestamp() for b in series], "min": [b.min for b in series],
        "max": [b.max for b in series], "avg": [b.avg for b in series],
    }  # fmt: skip


def _broker_url(request: Request) -> str:
    """Where a gateway reaches this fleet's broker, for the [uplink] table it needs."""
    settings = request.app.state.settings
    if settings.mqtt_url:
        return (
            str(settings.mqtt_url).split("@")[-1].join(("mqtt://", ""))
            if "@" in str(settings.mqtt_url)
            else str(settings.mqtt_url)
        )
    return f"mqtt://{request.url.hostname}:{settings.mqtt_listen[1]}"


def _safe_next(next_url: str) -> str:
    """A path on this server to return to (never another site: '//host' or a scheme)."""
    if not next_url.startswith("/") or next_url.startswith("//") or "\\" in next_url:
        return "/"
    return next_url


@router.post("/language")
async def choose_language(request: Request, session: SessionDep) -> RedirectResponse:
    """Speak the language in the form's ``lang`` from now on: stored with a logged-in user,
    and in a cookie for the login page; back to the form's ``next``."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    chosen = language((form.get("lang") or [""])[0])
    if chosen is None:
        raise HTTPException(422, "lang: expected one of en, zh-Hans")
    back = RedirectResponse(_safe_next((form.get("next") or ["/"])[0]), status_code=303)
    back.set_cookie(LANG_COOKIE, chosen, max_age=365 * 86400, samesite="strict", httponly=True)
    secret = request.cookies.get(COOKIE)
    actor = None if secret is None else await session_actor(session, secret)
    if actor is not None:
        await session.execute(update(User).where(User.id == actor.user_id).values(locale=chosen))
        await session.commit()
    return back

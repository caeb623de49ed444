"""The configuration screens: every gateway's desired vs reported state, one gateway's
versions (push, diff, revert), and bulk changes (preview, then apply).

Plain forms posted to these pages (they work without scripts): a refused document is shown
again with the validator's messages beside it, a safety change with what it weakens and a box
to confirm it deliberately, a success as a redirect to the gateway's page with a notice.
Pushing, reverting and bulk changes need the operator role; the pages say so otherwise.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from fleet.api.deps import SessionDep
from fleet.config import bulk, versions
from fleet.config.signing import fleet_key
from fleet.config.tables import ConfigVersion, GatewayConfig
from fleet.errors import ConfigNotFound, ConfigRefused, SafetyChangeUnconfirmed
from fleet.models import Gateway, Role, Site
from fleet.pages.person import Person, PersonDep, here
from fleet.pages.templating import screen

router = APIRouter(include_in_schema=False)
DOING = "changing configurations"


def _context(person: Person, request: Request, **more: Any) -> dict[str, Any]:
    may = person.actor.role.rank >= Role.OPERATOR.rank
    return {
        "person": person, "request": request, "nav": "config", "here": here(request),
        "now": datetime.now(UTC), "may_change": may, **more,
    }  # fmt: skip


async def _form(request: Request) -> dict[str, str]:
    form = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in form.items()}


@router.get("/config")
async def config_list(request: Request, person: PersonDep, session: SessionDep) -> Response:
    """Every gateway: desired vs reported, drifting ones first."""
    rows = await session.execute(
        select(Site.name, Gateway.name, GatewayConfig, ConfigVersion)
        .join(Gateway, Gateway.site_id == Site.id)
        .outerjoin(GatewayConfig, GatewayConfig.gateway_id == Gateway.id)
        .outerjoin(
            ConfigVersion,
            (ConfigVersion.gateway_id == Gateway.id)
            & (ConfigVersion.number == GatewayConfig.desired),
        )
        .order_by(Site.name, Gateway.name)
    )
    states = [
        versions.config_state(versions.label(site, gw), row, desired)
        for site, gw, row, desired in rows
    ]
    states.sort(key=lambda s: (not s.drift, s.gateway))
    context = _context(person, request, states=states)
    return screen(request, person.language, "config_list.html", None, context)


@router.get("/gateways/{site}/{gateway}/config")
async def gateway_config(
    site: str,
    gateway: str,
    request: Request,
    person: PersonDep,
    session: SessionDep,
    a: int | None = None,
    b: int | None = None,
    done: str = "",
) -> Response:
    return await _gateway_page(request, person, session, site, gateway, a=a, b=b, done=done)


async def _gateway_page(
    request: Request,
    person: Person,
    session: SessionDep,
    site: str,
    gateway: str,
    *,
    a: int | None = None,
    b: int | None = None,
    done: str = "",
    status: int = 200,
    **form: Any,
) -> Response:
    state = await versions.state(session, site, gateway)
    history = await versions.history(session, site, gateway)
    diff = ""
    if a is not None and b is not None:
        try:
            diff = await versions.diff(session, site, gateway, a, b)
        except ConfigNotFound as exc:
            form.setdefault("problems", [str(exc)])
    document = form.pop("document", None)
    if document is None and state.desired is not None:
        document = (await versions.show(session, site, gateway)).document
    context = _context(
        person, request, site=site, gateway=gateway, state=state, history=history, diff=diff,
        a=a, b=b, done=done, document=document or "", **form,
    )  # fmt: skip
    response = screen(request, person.language, "config_gateway.html", None, context)
    response.status_code = status
    return response


@router.post("/gateways/{site}/{gateway}/config")
async def push_from_page(
    site: str, gateway: str, request: Request, person: PersonDep, session: SessionDep
) -> Response:
    form = await _form(request)
    document = form.get("document", "").replace("\r\n", "\n")
    comment = form.get("comment", "")[:500]
    if person.actor.role.rank < Role.OPERATOR.rank:
        return await _refused_role(request, person, session, site, gateway, document, comment)
    try:
        view = await versions.push(
            session,
            site,
            gateway,
            document,
            author=person.actor.label,
            comment=comment,
            confirm_safety=form.get("confirm_safety_change") == "yes",
            source="the document",
            signer=fleet_key(request.app.state.settings.config_signing_key),
        )
    except ConfigRefused as exc:
        await session.rollback()
        return await _gateway_page(
            request, person, session, site, gateway, status=422,
            document=document, comment=comment, problems=exc.problems,
        )  # fmt: skip
    except SafetyChangeUnconfirmed as exc:
        await session.rollback()
        return await _gateway_page(
            request, person, session, site, gateway, status=409,
            document=document, comment=comment, safety=exc.changes,
        )  # fmt: skip
    await session.commit()
    _wake(request)
    return _back(site, gateway, f"version {view.number} is desired")


@router.post("/gateways/{site}/{gateway}/config/revert")
async def revert_from_page(
    site: str, gateway: str, request: Request, person: PersonDep, session: SessionDep
) -> Response:
    form = await _form(request)
    if person.actor.role.rank < Role.OPERATOR.rank:
        return await _refused_role(request, person, session, site, gateway, None, "")
    number = int(form["version"]) if form.get("version", "").isdigit() else 0
    try:
        view = await versions.revert(
            session,
            site,
            gateway,
            number,
            author=person.actor.label,
            comment=form.get("comment", "")[:500],
            confirm_safety=form.get("confirm_safety_change") == "yes",
            signer=fleet_key(request.app.state.settings.config_signing_key),
        )
    except SafetyChangeUnconfirmed as exc:
        await session.rollback()
        return await _gateway_page(
            request, person, session, site, gateway, status=409,
            safety=exc.changes, revert_to=number,
        )  # fmt: skip
    except (ConfigRefused, ConfigNotFound) as exc:
        await session.rollback()
        problems = exc.problems if isinstance(exc, ConfigRefused) else [str(exc)]
        return await _gateway_page(
            request, person, session, site, gateway, status=422, problems=problems
        )
    await session.commit()
    _wake(request)
    return _back(site, gateway, f"version {view.number} (the document of {number}) is desired")


async def _refused_role(
    request: Request,
    person: Person,
    session: SessionDep,
    site: str,
    gateway: str,
    document: str | None,
    comment: str,
) -> Response:
    return await _gateway_page(
        request, person, session, site, gateway, status=403, document=document, comment=comment,
        problems=[f"{DOING} needs the operator role; you are {person.actor.role}"],
    )  # fmt: skip


def _back(site: str, gateway: str, done: str) -> RedirectResponse:
    return RedirectResponse(
        f"/gateways/{quote(site)}/{quote(gateway)}/config?done={quote(done)}", status_code=303
    )


def _wake(request: Request) -> None:
    delivery = getattr(request.app.state, "config_delivery", None)
    if delivery is not None:
        delivery.wake()


@router.get("/config/bulk")
async def bulk_page(request: Request, person: PersonDep) -> Response:
    context = _context(person, request, form={}, lines=None, applied=False)
    return screen(request, person.language, "config_bulk.html", None, context)


@router.post("/config/bulk")
async def bulk_from_page(request: Request, person: PersonDep, session: SessionDep) -> Response:
    form = await _form(request)
    names = [g.strip() for g in form.get("gateways", "").replace(",", " ").split() if g.strip()]
    selection = bulk.Selection(
        site=form.get("site") or None, tag=form.get("tag") or None, gateways=names
    )
    fragment = form.get("fragment", "").replace("\r\n", "\n")
    apply = form.get("action") == "apply"
    problems: list[str] = []
    lines: list[bulk.BulkLine] | None = None
    status = 200
    try:
        if apply and person.actor.role.rank < Role.OPERATOR.rank:
            raise ConfigRefused(
                "bulk change", [f"{DOING} needs the operator role; you are {person.actor.role}"]
            )
        if apply:
            lines = await bulk.apply(
                session,
                selection,
                fragment,
                author=person.actor.label,
                comment=form.get("comment", "")[:500],
                confirm_safety=form.get("confirm_safety_change") == "yes",
                signer=fleet_key(request.app.state.settings.config_signing_key),
            )
            await session.commit()
            _wake(request)
        else:
            lines = await bulk.preview(session, selection, fragment)
    except (ConfigRefused, ConfigNotFound) as exc:
        await session.rollback()
        problems = exc.problems if isinstance(exc, ConfigRefused) else [str(exc)]
        status = 422
    context = _context(
        person, request, form=form, lines=lines, applied=apply and lines is not None,
        problems=problems,
    )  # fmt: skip
    response = screen(request, person.language, "config_bulk.html", None, context)
    response.status_code = status
    return response

"""The maintenance screens: server-rendered HTML for people, next to the JSON API for scripts.

Each screen is a route in :mod:`fleet.pages.routes` that runs the same queries as the API
(:mod:`fleet.queries`) and renders a Jinja2 template of ``fleet/web/templates`` in the
person's language (:mod:`fleet.pages.templating`). A screen's changing part is a *live
fragment*: the same URL with ``?live=1`` renders only that part, and htmx fetches it every
few seconds and morphs it into the page (idiomorph), so open menus, focus and scroll stay. A
fragment carries an ETag, so a refresh where nothing changed is a bodiless 304. Time series
are drawn by uPlot. Every script, style and the OpenAPI docs' assets are served from
``fleet/web/vendor`` (pinned, with their licences): nothing comes from the internet.

A new screen (configuration, releases, rollouts) is a template extending ``layout.html``, a
fragment template for its live part and a route using :func:`fleet.pages.templating.screen`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from fleet.pages import config, docs, releases, rollouts, routes
from fleet.pages.person import LoginNeeded
from fleet.pages.templating import STATIC, VENDOR

#: What a page may load: only from the fleet itself, so a library that reaches for the internet
#: is refused by the browser. Inline scripts and styles: Swagger UI's page and the screens'
#: select-to-submit handlers.
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'self'"
)


def install(app: FastAPI) -> None:
    """Add the screens, their static files and the offline OpenAPI docs to ``app``."""
    app.include_router(routes.router)
    app.include_router(config.router)  # the configuration screens (fleet.config)
    app.include_router(releases.router)  # releases, which version runs where
    app.include_router(rollouts.router)  # rollouts (fleet.rollouts)
    app.include_router(docs.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/vendor", StaticFiles(directory=VENDOR), name="vendor")
    app.add_exception_handler(LoginNeeded, _log_in_first)

    @app.middleware("http")
    async def own_origin_only(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        return response


async def _log_in_first(request: Request, exc: Exception) -> Response:
    """The login page, coming back here after; a live refresh gets 401 (the page's script
    then goes to the login page itself)."""
    assert isinstance(exc, LoginNeeded)
    if request.query_params.get("live") == "1":
        return Response(status_code=401)
    return RedirectResponse(f"/login?next={quote(exc.next_url, safe='')}", status_code=303)

"""Rendering a screen: one Jinja2 environment per language (its translations installed, so
templates say ``{{ _("Overview") }}``), the context every page gets, and the live-fragment
protocol (``?live=1``, ETag, 304)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from fleet.i18n import LANGUAGES
from fleet.i18n.catalogue import translations
from fleet.i18n.formats import Formats

WEB = Path(__file__).resolve().parent.parent / "web"
TEMPLATES = WEB / "templates"
STATIC = WEB / "static"
VENDOR = WEB / "vendor"

#: Every third-party asset the pages load, by what it is; versions are in the paths
#: (fleet/web/vendor/README.md lists them with their licences and checksums).
VENDORED: Mapping[str, str] = {
    "htmx": "/vendor/htmx-2.0.9/htmx.min.js",
    "idiomorph": "/vendor/idiomorph-0.7.4/idiomorph-ext.min.js",
    "uplot-js": "/vendor/uplot-1.6.32/uPlot.iife.min.js",
    "uplot-css": "/vendor/uplot-1.6.32/uPlot.min.css",
    "swagger-ui-js": "/vendor/swagger-ui-5.35.0/swagger-ui-bundle.js",
    "swagger-ui-css": "/vendor/swagger-ui-5.35.0/swagger-ui.css",
}
#: How often a live fragment refreshes.
REFRESH_S = 2


@cache
def environment(language: str) -> Environment:
    """The templates in ``language`` (a tag of fleet.i18n.LANGUAGES)."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    env.globals.update(
        vendored=VENDORED,
        languages=LANGUAGES,
        refresh_s=REFRESH_S,
        fmt=Formats(language),
        from_timestamp=lambda t: datetime.fromtimestamp(t, UTC),
    )
    return env


def render(language: str, template: str, context: Mapping[str, Any]) -> str:
    return environment(language).get_template(template).render(**context, language=language)


def is_live(request: Request) -> bool:
    """A live fragment's refresh (the screen's URL with ``live=1``)."""
    return request.query_params.get("live") == "1"


#: An age's words ("3 sec. ago") change every second and the page's script keeps them
#: current, so a fragment's ETag leaves them out: the same data is the same fragment.
_AGE_TEXT = re.compile(r'(<time class="age"[^>]*>)[^<]*(</time>)')


def fragment_response(request: Request, body: str) -> Response:
    """``body`` with an ETag; 304 without a body when the browser already has it (its ages'
    words may be older: the page's script rewrites them after each swap)."""
    digest = hashlib.blake2b(_AGE_TEXT.sub(r"\1\2", body).encode(), digest_size=12)
    etag = f'"{digest.hexdigest()}"'
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return HTMLResponse(body, headers=headers)


def screen(
    request: Request,
    language: str,
    page: str,
    live: str | None,
    context: Mapping[str, Any],
) -> Response:
    """A screen: the whole ``page`` template, or only its ``live`` fragment template when
    the request is a live refresh (with an ETag)."""
    if live is not None and is_live(request):
        return fragment_response(request, render(language, live, context))
    return HTMLResponse(
        render(language, page, context), headers={"Cache-Control": "private, no-cache"}
    )

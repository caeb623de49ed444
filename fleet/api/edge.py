"""The fleet's web edge: what every request passes before a route sees it, and what every
answer carries.

* A request body over ``Settings.max_body_bytes`` is refused with 413 before it is read (by
  its ``Content-Length``, or as soon as a streamed body passes the limit).
* A JSON body that is not UTF-8 or carries a lone surrogate (``"\\ud800"``: no database, hash
  or page can take it) is refused with 400; a 422 names the fields at fault without echoing
  what was sent.
* A change (POST, PUT, PATCH, DELETE) made with the login cookie must come from the fleet's
  own pages: ``Sec-Fetch-Site`` same-origin (or none: typed by the user), or an ``Origin``
  equal to the server's own; otherwise 403. API tokens (``Authorization``) are not sent by
  browsers on their own, so they are not checked.
* ``/docs`` and ``/openapi.json`` need a login (``Settings.api_docs``: ``login``, ``public``
  or ``off``).
* Every answer carries security headers: a Content-Security-Policy without inline script
  (scripts only from this server's ``/static``), ``frame-ancestors 'none'``, ``nosniff``, a
  referrer policy, and HSTS when served over TLS.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleet.accounts.logins import session_actor
from fleet.accounts.tokens import token_actor
from fleet.core.settings import Settings

COOKIE = "doorstep_session"
CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DOCS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json"})
#: Scripts and styles only from this server (vendored under /static), no inline script.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
#: Swagger UI's page starts itself with an inline script (FastAPI's own HTML).
DOCS_CSP = CSP.replace("script-src 'self'", "script-src 'self' 'unsafe-inline'").replace(
    "style-src 'self'", "style-src 'self' 'unsafe-inline'"
)
HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
HSTS = (b"strict-transport-security", b"max-age=31536000")
_SURROGATE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F]")
#: How much of a refused value a 422 may quote.
QUOTE = 80


class TooLarge(Exception):
    """The body went past the limit while it was read."""


class Edge:
    """ASGI middleware in front of the whole app (see the module's docstring)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        path: str = scope["path"]
        secure = scope.get("scheme") == "https"
        csp = DOCS_CSP if path == "/docs" else CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [*HEADERS, (b"content-security-policy", csp.encode())]
                if secure:
                    extra.append(HSTS)
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((k, v) for k, v in extra if k not in present),
                ]
            await send(message)

        refusal = await self._refusal(scope, headers, path)
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        limit = self.settings.max_body_bytes
        length = headers.get("content-length")
        too_large = _answer(413, f"request body over {limit} bytes")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await too_large(scope, receive, send_with_headers)
            return
        try:
            body = await _read(receive, limit)
        except TooLarge:
            await too_large(scope, receive, send_with_headers)
            return
        problem = _json_problem(headers.get("content-type", ""), body)
        if problem is not None:
            await _answer(400, problem)(scope, receive, send_with_headers)
            return
        await self.app(scope, _replay(body, receive), send_with_headers)

    async def _refusal(self, scope: Scope, headers: dict[str, str], path: str) -> Any:
        """The answer refusing this request before it is read, or None."""
        docs = self.settings.api_docs
        if path in DOCS and docs != "public":
            if docs == "off":
                return _answer(404, "the API documentation is switched off (api_docs)")
            if not await _logged_in(scope, headers):
                if path == "/docs" and "text/html" in headers.get("accept", ""):
                    # A person opening the docs in a browser is sent to log in first.
                    return RedirectResponse("/login?next=%2Fdocs", status_code=303)
                return _answer(401, "not logged in")
        if (
            scope["method"] in CHANGES
            and _cookie(headers)
            and "authorization" not in headers
            and not _same_origin(scope, headers)
        ):
            return _answer(403, "a change with the login cookie must come from this site")
        return None


def _cookie(headers: dict[str, str]) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return value
    return None


def _same_origin(scope: Scope, headers: dict[str, str]) -> bool:
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is None:
        return True  # not a browser's cross-site request (browsers send Origin on those)
    host = headers.get("host", "")
    return origin in (f"{scope.get('scheme', 'http')}://{host}",)


async def _logged_in(scope: Scope, headers: dict[str, str]) -> bool:
    app = scope["app"]
    authorization = headers.get("authorization", "")
    cookie = _cookie(headers)
    async with app.state.sessions() as session:
        if authorization.lower().startswith("bearer "):
            return await token_actor(session, authorization[7:].strip()) is not None
        return cookie is not None and await session_actor(session, cookie) is not None


async def _read(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # the disconnect

    return replay


def _json_problem(content_type: str, body: bytes) -> str | None:
    """Why a JSON body cannot be taken (not UTF-8, a lone surrogate), or None."""
    if not body or "json" not in content_type.lower():
        return None
    try:
        body.decode()
    except UnicodeDecodeError as exc:
        return f"request body: not UTF-8 at byte {exc.start}"
    if _SURROGATE_ESCAPE.search(body):
        try:
            _encodable(json.loads(body))
        except UnicodeEncodeError:  # a lone surrogate (before ValueError: it is one)
            return "request body: text with a lone surrogate (not valid Unicode)"
        except (ValueError, RecursionError):
            return None  # FastAPI answers a malformed body with its own 422
    return None


def _encodable(value: Any) -> None:
    if isinstance(value, str):
        value.encode()
    elif isinstance(value, dict):
        for key, item in value.items():
            key.encode()
            _encodable(item)
    elif isinstance(value, list):
        for item in value:
            _encodable(item)


def _answer(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


async def _validation_error(request: Request, exc: Exception) -> Response:
    """422 naming each field at fault, quoting at most :data:`QUOTE` characters of it."""
    assert isinstance(exc, RequestValidationError)
    errors = []
    for error in exc.errors():
        shown = {k: v for k, v in error.items() if k in ("type", "loc", "msg")}
        if "input" in error and not isinstance(error["input"], dict | list):
            text = repr(error["input"])
            shown["input"] = text[:QUOTE] + ("…" if len(text) > QUOTE else "")
        errors.append(shown)
    body = json.dumps({"detail": errors}, default=str, ensure_ascii=True)
    return Response(body, status_code=422, media_type="application/json")


def install(app: FastAPI, settings: Settings) -> None:
    """Put the edge in front of ``app`` and its 422 answer in place of FastAPI's."""
    app.add_middleware(Edge, settings=settings)
    app.add_exception_handler(RequestValidationError, _validation_error)

"""The fleet's REST API under ``/api``: one router module per resource, typed dependencies
in :mod:`fleet.api.deps`, and the translation of fleet.accounts.auth's errors into HTTP answers."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from fleet.accounts.auth import (
    AccessDenied,
    AuthError,
    LastAdmin,
    LoginFailed,
    TokenNotFound,
    TooManyLogins,
    UserError,
    UserExists,
    UserNotFound,
)
from fleet.api import alarms, audit, history, ingest, overview, session, sites, tokens, users
from fleet.registry import RegistryError

STATUS: dict[type[Exception], int] = {
    LoginFailed: 401,
    AccessDenied: 403,
    TokenNotFound: 404,
    UserNotFound: 404,
    UserExists: 409,
    LastAdmin: 409,
    TooManyLogins: 429,
    UserError: 422,
    RegistryError: 422,
}

router = APIRouter(prefix="/api")
for module in (session, overview, sites, history, alarms, users, tokens, audit, ingest):
    router.include_router(module.router)


async def _error(request: Request, exc: Exception) -> JSONResponse:
    status = next(code for kind, code in STATUS.items() if isinstance(exc, kind))
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyLogins) else None
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Add the API routes and the error answers to ``app``."""
    app.include_router(router)
    for kind in (AuthError, RegistryError):
        app.add_exception_handler(kind, _error)

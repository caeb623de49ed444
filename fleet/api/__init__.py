"""The fleet's REST API under ``/api``: one router module per resource, typed dependencies
in :mod:`fleet.api.deps`, and the one translation of fleet errors (:mod:`fleet.errors`) into
HTTP answers, :data:`STATUS`."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from fleet.api import (
    alarms,
    audit,
    config,
    history,
    ingest,
    models,
    overview,
    releases,
    session,
    sites,
    tokens,
    users,
)
from fleet.errors import (
    AccessDenied,
    AlreadyRegistered,
    ConfigNotFound,
    ConfigRefused,
    ConfigVersionError,
    FleetError,
    LastAdmin,
    LoginFailed,
    NotRegistered,
    RegistryError,
    ReleaseError,
    ReleaseExists,
    ReleaseNotFound,
    RolloutError,
    RolloutNotFound,
    SafetyChangeUnconfirmed,
    TokenNotFound,
    TooManyLogins,
    UserError,
    UserExists,
    UserNotFound,
)
from fleet.rollouts import api as rollouts_api

#: The answer to each error a request can cause, ``{"detail": message}`` with this status; an
#: error takes the status of its most specific class here. A fleet error not under one of
#: these (a bad URL in the server's settings, its broker) is the server's fault: a 500.
STATUS: dict[type[FleetError], int] = {
    LoginFailed: 401,
    AccessDenied: 403,
    TokenNotFound: 404,
    UserNotFound: 404,
    NotRegistered: 404,
    ReleaseNotFound: 404,
    RolloutNotFound: 404,
    RolloutError: 422,
    ReleaseExists: 409,
    ReleaseError: 422,
    UserExists: 409,
    AlreadyRegistered: 409,
    LastAdmin: 409,
    UserError: 422,
    RegistryError: 422,
    TooManyLogins: 429,
    ConfigVersionError: 422,
    ConfigNotFound: 404,
    ConfigRefused: 422,
    SafetyChangeUnconfirmed: 409,
}

router = APIRouter(prefix="/api")
for module in (session, overview, sites, history, alarms, users, tokens, audit, ingest, releases):
    router.include_router(module.router)
router.include_router(config.router)  # desired configuration (fleet.config)
router.include_router(rollouts_api.router)  # fleet/rollouts/api.py
router.include_router(rollouts_api.windows)  # a site's maintenance window
router.include_router(models.router)  # the device catalog (fleet.catalog)


def status_of(error: Exception) -> int:
    """The HTTP status answering ``error``: that of its most specific class in STATUS, else
    500."""
    return next((STATUS[kind] for kind in type(error).__mro__ if kind in STATUS), 500)


async def _error(request: Request, exc: Exception) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyLogins) else None
    return JSONResponse({"detail": str(exc)}, status_code=status_of(exc), headers=headers)


def install(app: FastAPI) -> None:
    """Add the API routes and the error answers to ``app``."""
    app.include_router(router)
    for kind in STATUS:
        app.add_exception_handler(kind, _error)

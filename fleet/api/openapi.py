"""The API's OpenAPI document tells the errors each operation really answers, in the one shape
they all have (:class:`ErrorBody`, ``{"detail": ...}``).

FastAPI documents the success and, for operations with parameters, a 422 in its own shape,
which is not ours (:mod:`fleet.api.edge` answers 422 without echoing what was sent). Rather
than every route listing its errors, they are read here from what each route depends on:

* a credential (an API token or the login cookie): 401;
* a check of the actor beyond being logged in (a role, a browser login rather than a token):
  403; so does every change (POST, PUT, PATCH, DELETE), which the edge refuses when the login
  cookie comes from another site;
* a path parameter: 404 (that site, gateway, alarm, ... does not exist);
* a request body: 400 (JSON that is not UTF-8 or has a lone surrogate), 413 (over
  ``max_body_bytes``) and 422; any parameter: 422;
* what no dependency shows (a conflict, a name in a query or a body that is not found): the
  operation's line in :data:`KNOWN`.

:func:`install` puts the described document in place of FastAPI's (``/openapi.json``,
``/docs``); tests/fleet/api/test_contract.py holds the API to it with schemathesis.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security.base import SecurityBase
from pydantic import BaseModel, Field
from starlette.routing import BaseRoute

from fleet.api import deps
from fleet.api.edge import CHANGES

COMPONENTS = "#/components/schemas/{model}"
#: FastAPI's own 422 shape, replaced by :class:`ErrorBody` everywhere
FASTAPI_ERRORS = ("HTTPValidationError", "ValidationError")


class FieldError(BaseModel):
    """One field a 422 refuses."""

    type: str = Field(description="pydantic's error type, e.g. missing, string_too_long")
    loc: list[str | int] = Field(description="where: body, query, path, then the field's path")
    msg: str
    input: str | None = Field(
        default=None, description="what was sent (a scalar), quoted to at most 80 characters"
    )


class ErrorBody(BaseModel):
    """Every error the API answers: a message for a person, or (a 422 from validation) each
    field at fault."""

    detail: str | list[FieldError]


WHY = {
    400: "the JSON body is not UTF-8 or carries a lone surrogate",
    401: "not logged in, or the API token is unknown, revoked or expired",
    403: "not allowed for this actor: its role is too low, or an API token where a login is needed",
    404: "not found",
    413: "the request body is over the server's limit (max_body_bytes)",
    422: "a value refused: detail names each field at fault, or says why",
}
CHANGE_403 = "a change with the login cookie from another site"

CONFIG = "/api/gateways/{site}/{gateway}/config"
UNCONFIRMED = "weakens a standard interlock and confirm_safety_change is not set"
#: What an operation answers that its dependencies do not show: (method, path) → {status: why}
KNOWN: dict[tuple[str, str], dict[int, str]] = {
    ("GET", "/api/history"): {404: "no such device on that site's gateway"},
    ("POST", "/api/alarms/ack"): {404: "an alarm or the site is not known: none acknowledged"},
    ("POST", "/api/sites"): {409: "a site of that name exists"},
    ("POST", "/api/sites/{site}/gateways"): {409: "the site has a gateway of that name"},
    ("POST", "/api/users"): {409: "a user of that name exists"},
    ("POST", "/api/releases"): {409: "that version for that platform exists, with other files"},
    ("GET", "/api/releases/{release_id}/bundle"): {403: "the token does not open this release"},
    ("POST", "/api/rollouts"): {404: "no such release"},
    ("POST", "/api/rollouts/preview"): {404: "no such release"},
    ("POST", "/api/config/bulk"): {404: "a selected gateway is not known"},
    ("POST", "/api/config/bulk/preview"): {404: "a selected gateway is not known"},
    ("POST", CONFIG + "/versions"): {409: UNCONFIRMED},
    ("POST", CONFIG + "/revert"): {409: UNCONFIRMED},
}


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def _statuses(route: Any, operation: dict[str, Any]) -> dict[int, str]:
    """The error statuses ``route`` (an APIRoute, or FastAPI's context of one) can answer;
    ``operation`` is its part of the document."""
    dependant: Dependant = route.dependant
    found: dict[int, list[str]] = {}

    def add(status: int, why: str) -> None:
        if why not in found.setdefault(status, []):
            found[status].append(why)

    for sub in _dependencies(dependant):
        if isinstance(sub.call, SecurityBase):
            add(401, WHY[401])
        elif sub.call is not deps._actor and any(
            inner.call is deps._actor for inner in sub.dependencies
        ):
            add(403, WHY[403])
    if route.methods & CHANGES:
        add(403, CHANGE_403)
    if dependant.path_params:
        add(404, "no such " + ", ".join(p.name for p in dependant.path_params))
    body = operation.get("requestBody", {}).get("content", {})
    if any("json" in media for media in body):
        add(400, WHY[400])
    if body:
        add(413, WHY[413])
    if dependant.path_params or dependant.query_params or body:
        add(422, WHY[422])
    return {status: "; ".join(whys) for status, whys in found.items()}


def _operations(routes: Sequence[BaseRoute]) -> Iterator[tuple[str, str, Any]]:
    for context in iter_route_contexts(routes):
        path = context.path_format
        if isinstance(context.original_route, APIRoute) and context.include_in_schema and path:
            for method in sorted(context.methods or ()):
                yield method, path, context


def describe(document: dict[str, Any], routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """``document`` (FastAPI's OpenAPI of ``routes``), its errors described, in place."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in FASTAPI_ERRORS:
        schemas.pop(name, None)
    body = ErrorBody.model_json_schema(ref_template=COMPONENTS)
    schemas.update(body.pop("$defs"))
    schemas["ErrorBody"] = body
    error = {"application/json": {"schema": {"$ref": COMPONENTS.format(model="ErrorBody")}}}
    for method, path, route in _operations(routes):
        operation = document["paths"][path][method.lower()]
        responses = operation.setdefault("responses", {})
        statuses = _statuses(route, operation) | KNOWN.get((method, path), {})
        for status, why in statuses.items():
            responses.setdefault(str(status), {})
            responses[str(status)].setdefault("description", why)
        for status, answer in responses.items():
            if status.startswith("4"):
                if answer.get("description") in (None, "", "Validation Error"):
                    answer["description"] = statuses.get(int(status), WHY.get(int(status), ""))
                answer["content"] = error
        operation["responses"] = dict(sorted(responses.items()))
    return document


def install(app: FastAPI) -> None:
    """Serve :func:`describe`'s document as the app's OpenAPI."""
    described: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        document = FastAPI.openapi(app)  # FastAPI's, made again when routes are added
        if not described or described[0] is not document:
            described[:] = [describe(document, app.routes)]
        return document

    app.openapi = openapi  # type: ignore[method-assign]

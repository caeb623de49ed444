"""Fleet errors become HTTP answers in one place (fleet.api.STATUS): every error a request
can cause is a 4xx with its message, a new kind of error takes its parent's status, and the
server's own errors stay a 500."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from fleet import api
from fleet.errors import (
    AuthError,
    BadInput,
    BrokerUrlError,
    DatabaseUrlError,
    EmbeddedBrokerError,
    Failed,
    FleetError,
    LoginFailed,
    PointMapNotSeen,
    Rejected,
    RetentionError,
    TooManyLogins,
    UserNotFound,
)

#: bases raised only as one of their subclasses
BASES = {FleetError, AuthError}
#: errors no request causes: the server's settings and broker, ingest, the command line
NOT_FROM_REQUESTS = {
    DatabaseUrlError,
    BrokerUrlError,
    EmbeddedBrokerError,
    RetentionError,
    Rejected,
    PointMapNotSeen,
    Failed,
    BadInput,
}


def every_error(root: type[FleetError] = FleetError) -> list[type[FleetError]]:
    return [root, *(kind for sub in root.__subclasses__() for kind in every_error(sub))]


def an(kind: type[FleetError]) -> FleetError:
    if kind is LoginFailed:
        return LoginFailed()
    if kind is TooManyLogins:
        return TooManyLogins("too many failed logins", retry_after=7)
    if kind is Rejected:
        return Rejected("schema", "a field is missing")
    if kind is PointMapNotSeen:
        return PointMapNotSeen("3f2a", "point map '3f2a' not seen")
    return kind(f"a {kind.__name__} happened")


async def answer_to(error: FleetError) -> httpx.Response:
    """What the API answers to a request during which ``error`` is raised."""
    app = FastAPI()
    api.install(app)

    @app.get("/fails")
    async def fails() -> None:
        raise error

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://fleet.test") as http:
        return await http.get("/fails")


@pytest.mark.parametrize("kind", every_error(), ids=lambda kind: kind.__name__)
async def test_every_error_a_request_can_cause_is_a_4xx_with_its_message(
    kind: type[FleetError],
) -> None:
    error = an(kind)
    answer = await answer_to(error)
    if kind in NOT_FROM_REQUESTS | BASES:
        assert answer.status_code == 500
    else:
        assert 400 <= answer.status_code < 500
        assert answer.status_code == api.status_of(error)
        assert answer.json() == {"detail": str(error)}


async def test_too_many_logins_says_when_to_try_again() -> None:
    answer = await answer_to(TooManyLogins("too many failed logins", retry_after=7))
    assert (answer.status_code, answer.headers["Retry-After"]) == (429, "7")


async def test_a_new_kind_of_error_takes_its_parents_status() -> None:
    class UserGone(UserNotFound):
        """(only this test's)"""

    answer = await answer_to(UserGone("no user 'ada' any more"))
    assert (answer.status_code, answer.json()) == (404, {"detail": "no user 'ada' any more"})

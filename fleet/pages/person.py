"""Who is looking at a screen and in which language: the browser login (the same cookie as
the API), the language stored with the user, else the ``lang`` cookie (set on the login
page), else the browser's ``Accept-Language``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from sqlalchemy import select

from fleet.accounts.actor import Actor
from fleet.accounts.logins import session_actor
from fleet.api.deps import COOKIE, SessionDep
from fleet.i18n.negotiate import from_accept_language, language
from fleet.models import Role, User

LANG_COOKIE = "doorstep_lang"


class LoginNeeded(Exception):
    """Not logged in: the screen answers with the login page (a live refresh with 401)."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


@dataclass(frozen=True)
class Person:
    actor: Actor
    language: str

    @property
    def may_acknowledge(self) -> bool:
        return self.actor.role.rank >= Role.MAINTAINER.rank


def browser_language(request: Request) -> str:
    """The language of a browser that is not logged in: its cookie, else Accept-Language."""
    return language(request.cookies.get(LANG_COOKIE)) or from_accept_language(
        request.headers.get("accept-language")
    )


def here(request: Request) -> str:
    """This screen's path and query (without the live flag), to come back to."""
    query = "&".join(
        f"{k}={quote(v)}" for k, v in request.query_params.multi_items() if k != "live"
    )
    return request.url.path + (f"?{query}" if query else "")


async def _person(request: Request, session: SessionDep) -> Person:
    secret = request.cookies.get(COOKIE)
    actor = None if secret is None else await session_actor(session, secret)
    if actor is None:
        raise LoginNeeded(here(request))
    stored = await session.scalar(select(User.locale).where(User.id == actor.user_id))
    return Person(actor=actor, language=language(stored) or browser_language(request))


PersonDep = Annotated[Person, Depends(_person)]

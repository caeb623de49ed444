"""The fleet app for API tests: its lifespan entered (database open, ingest not subscribed to
any broker), an httpx client on it, users made the way the CLI makes them, and gateway
messages fed through the real ingest with real wire payloads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from fleet.accounts.users import create_user
from fleet.app import create_app
from fleet.core.settings import Settings
from fleet.ingest.ingest import Ingest, Outcome
from fleet.models import Role
from gateway import wire

PASSWORD = "a long enough secret"
BASE = "http://fleet.test"


@asynccontextmanager
async def fleet_app(database_url: str, **settings: Any) -> AsyncIterator[FastAPI]:
    """The app on ``database_url``; ``settings`` override other fields of Settings."""
    app = create_app(Settings(database_url=database_url, ingest=False, **settings))
    async with app.router.lifespan_context(app):
        yield app


def client(app: FastAPI, token: str | None = None) -> httpx.AsyncClient:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE, headers=headers)


async def add_user(app: FastAPI, name: str, role: Role, password: str = PASSWORD) -> None:
    async with app.state.sessions() as session:
        await create_user(session, name, role, password)
        await session.commit()


@asynccontextmanager
async def login(
    app: FastAPI, name: str, password: str = PASSWORD
) -> AsyncIterator[httpx.AsyncClient]:
    """A client logged in as ``name`` (its cookie jar holds the session)."""
    async with client(app) as browser:
        answer = await browser.post("/api/login", json={"name": name, "password": password})
        assert answer.status_code == 200, answer.text
        yield browser


@asynccontextmanager
async def user(app: FastAPI, name: str, role: Role) -> AsyncIterator[httpx.AsyncClient]:
    """A new user with ``role``, logged in."""
    await add_user(app, name, role)
    async with login(app, name) as browser:
        yield browser


async def send(app: FastAPI, site: str, gateway: str, payload: wire.Payload) -> Outcome:
    """One gateway message through ingest, as if it had come from the broker."""
    kind = next(k for k, model in wire.MODELS.items() if isinstance(payload, model))
    ingest: Ingest = app.state.ingest
    outcome = await ingest.handle(wire.topic(site, gateway, kind), wire.encode(payload))
    assert outcome.status == "stored", outcome
    return outcome


def raised(
    event_id: int, key: str, severity: str, at: float, device: str | None = None
) -> wire.Event:
    return wire.Event(
        id=event_id, kind="raised", key=key, severity=severity,  # type: ignore[arg-type]
        interlock="I1", device=device, message=f"{key} raised", values={"t": 21.5}, at=at,
    )  # fmt: skip

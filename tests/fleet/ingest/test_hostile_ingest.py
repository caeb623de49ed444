"""Whatever a gateway (or someone holding its credentials) publishes is stored faithfully or
rejected with a reason, and nothing stored can make a read endpoint fail: arbitrary payloads
through the real ingest, then every read endpoint of the API, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from fleet.ingest.checks import REASONS, Limits
from fleet.ingest.ingest import Ingest
from fleet.models import Device, LatestValue, Role
from gateway import wire
from tests.fleet.api_client import fleet_app, user

pytestmark = pytest.mark.fleet

SITE, GW = "north", "gw-1"
NOW = time.time()


def mostly(valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> Any:
    """Valid four times in five: a payload is stored only when every field passes, and a
    value that breaks reading must first be stored."""
    return st.one_of(valid, valid, valid, valid, hostile)


# Text as a stranger sends it: any code point, lone surrogates and control characters too.
hostile_text = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=12),
    st.sampled_from(["x\ud800", "\udfff", "nul\x00", "\x1b[2J", "\u202eevil", "ok"]),
)
hostile_numbers = st.one_of(
    st.integers(min_value=2**62, max_value=2**80),
    st.integers(max_value=-(2**63)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([True, "2", None]),
)
names = mostly(st.sampled_from(["pv", "meter", "door", "temp"]), hostile_text)
numbers = mostly(st.integers(min_value=0, max_value=10**6), hostile_numbers)
times = mostly(st.floats(min_value=NOW - 3600, max_value=NOW + 60), hostile_numbers)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), hostile_text
)
anything = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(hostile_text, inner, max_size=3)
    ),
    max_leaves=10,
)
readings = st.fixed_dictionaries(
    {
        "d": names,
        "p": names,
        "v": mostly(scalars, anything),
        "q": mostly(st.sampled_from(["good", "stale", "bad", "offline"]), hostile_text),
        "t": times,
    }
)
events = st.fixed_dictionaries(
    {
        "id": mostly(st.integers(min_value=1, max_value=10**6), hostile_numbers),
        "kind": st.sampled_from(["raised", "updated", "cleared"]),
        "key": names,
        "severity": st.sampled_from(["critical", "major", "minor", "info"]),
        "interlock": names,
        "device": st.one_of(st.none(), names),
        "message": hostile_text,
        "values": st.dictionaries(hostile_text, scalars, max_size=3),
        "at": times,
    }
)
seqs = mostly(st.integers(min_value=1, max_value=10**5), hostile_numbers)


def _message(kind: wire.Kind, body: dict[str, Any]) -> tuple[wire.Kind, dict[str, Any]]:
    return kind, {"v": 1, **body}


payloads = st.one_of(
    st.builds(
        _message,
        st.just(wire.Kind.TELEMETRY),
        st.fixed_dictionaries(
            {"seq": seqs, "at": times, "readings": st.lists(readings, max_size=3)}
        ),
    ),
    st.builds(
        _message,
        st.just(wire.Kind.EVENTS),
        st.fixed_dictionaries({"seq": seqs, "at": times, "events": st.lists(events, max_size=2)}),
    ),
    st.builds(
        _message,
        st.just(wire.Kind.STATE),
        st.fixed_dictionaries(
            {
                "status": st.sampled_from(["online", "offline"]),
                "version": hostile_text,
                "at": times,
                "devices": st.dictionaries(names, names, max_size=3),
            }
        ),
    ),
    st.builds(
        _message,
        st.just(wire.Kind.HEALTH),
        st.fixed_dictionaries(
            {
                "at": times,
                "uptime_s": numbers,
                "version": hostile_text,
                "cpu_percent": numbers,
                "memory_mib": numbers,
                "disk_free_mib": numbers,
                "outbox_depth": numbers,
                "outbox_dropped": numbers,
                "loop": st.dictionaries(hostile_text, scalars, max_size=3),
                "buses": st.dictionaries(
                    hostile_text, st.dictionaries(hostile_text, scalars, max_size=2), max_size=2
                ),
            }
        ),
    ),
    st.tuples(st.sampled_from(list(wire.Kind)[:4]), anything),
)


def _reading(value: Any) -> tuple[wire.Kind, dict[str, Any]]:
    """A valid batch (a new number each time) whose one reading carries ``value``."""
    reading = {"d": "pv", "p": "status", "v": value, "q": "good", "t": NOW}
    return _message(
        wire.Kind.TELEMETRY, {"seq": next(_example_seqs), "at": NOW, "readings": [reading]}
    )


_example_seqs = itertools.count(200_000)


def _encoded(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, allow_nan=True, ensure_ascii=ascii_only).encode(errors="surrogatepass")


async def _read_everything(browser: httpx.AsyncClient) -> list[tuple[str, int]]:
    """Every read endpoint, with every device, point and alarm the fleet now knows."""
    answers: list[httpx.Response] = []
    for path in (
        "/api/overview",
        "/api/sites",
        f"/api/sites/{SITE}",
        "/api/alarms",
        "/api/alarms?state=all",
        "/api/alarms/by-cause",
        "/api/audit",
        "/api/ingest",
        "/api/me",
    ):
        answers.append(await browser.get(path))
    for alarm in answers[3].json() if answers[3].status_code == 200 else []:
        if isinstance(alarm, dict) and "id" in alarm:
            answers.append(await browser.get(f"/api/alarms/{alarm['id']}"))
    app = browser._transport.app  # type: ignore[attr-defined]
    async with app.state.sessions() as session:
        points = (await session.execute(select(Device.name, LatestValue.point).join(Device))).all()
    for device, point in points:
        params = {"site": SITE, "gateway": GW, "device": device, "point": point}
        answers.append(await browser.get("/api/history", params=params))
    return [(str(a.request.url), a.status_code) for a in answers]


def test_no_payload_makes_a_read_endpoint_fail(fleet_db_url: str) -> None:
    with asyncio.Runner() as runner:
        stack = AsyncExitStack()
        app = runner.run(stack.enter_async_context(fleet_app(fleet_db_url)))
        admin = runner.run(stack.enter_async_context(user(app, "root", Role.ADMIN)))
        assert runner.run(admin.post("/api/sites", json={"name": SITE})).is_success
        gateway = runner.run(admin.post(f"/api/sites/{SITE}/gateways", json={"name": GW}))
        assert gateway.is_success, gateway.text
        ingest: Ingest = app.state.ingest

        @settings(
            max_examples=80,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(payloads, st.booleans())
        @example(_reading("x\ud800"), True)  # the string that broke pages
        @example(_reading(1e999), True)
        @example(_reading({"deep": [[[["x\udfff"]]]]}), True)
        def check(message: tuple[wire.Kind, Any], ascii_only: bool) -> None:
            kind, body = message
            outcome = runner.run(
                ingest.handle(wire.topic(SITE, GW, kind), _encoded(body, ascii_only))
            )
            assert outcome.status in ("stored", "duplicate", "rejected")
            assert outcome.reason is None or outcome.reason in REASONS
            for url, status in runner.run(_read_everything(admin)):
                assert status < 500, url

        try:
            check()
        finally:
            runner.run(stack.aclose())


async def test_a_gateway_cannot_create_more_devices_or_points_than_its_limit(
    fleet_db_url: str,
) -> None:
    async with fleet_app(fleet_db_url) as app, user(app, "root", Role.ADMIN) as admin:
        assert (await admin.post("/api/sites", json={"name": SITE})).is_success
        assert (await admin.post(f"/api/sites/{SITE}/gateways", json={"name": GW})).is_success
        ingest = Ingest(app.state.sessions, limits=Limits(max_devices=3, max_points=4))
        topic = wire.topic(SITE, GW, wire.Kind.TELEMETRY)

        def batch(seq: int, *pairs: tuple[str, str]) -> bytes:
            return wire.encode_telemetry(
                seq, NOW, [{"d": d, "p": p, "v": 1, "q": "good", "t": NOW} for d, p in pairs]
            )

        assert (await ingest.handle(topic, batch(1, ("a", "x"), ("b", "x")))).status == "stored"
        many = [(f"dev-{i}", "x") for i in range(4000)]  # the 8,005-device attack, cut short
        refused = await ingest.handle(topic, batch(2, *many[:40]))
        assert (refused.status, refused.reason) == ("rejected", "limit")
        assert "at most 3 per gateway" in refused.detail
        state = wire.State(status="online", devices={f"dev-{i}": "m" for i in range(10)})
        refused = await ingest.handle(wire.topic(SITE, GW, wire.Kind.STATE), wire.encode(state))
        assert refused.reason == "limit"
        points = await ingest.handle(topic, batch(2, ("a", "y"), ("a", "z"), ("b", "y")))
        assert (points.status, points.reason) == ("rejected", "limit")
        assert "new points" in points.detail
        # what fits is still taken: one more device, two more points
        assert (await ingest.handle(topic, batch(2, ("c", "x"), ("a", "y")))).status == "stored"
        async with app.state.sessions() as session:
            assert await session.scalar(select(func.count(Device.id))) == 3
            assert await session.scalar(select(func.count()).select_from(LatestValue)) == 4
        assert ingest.stats()["rejected"] == {"limit": 3}

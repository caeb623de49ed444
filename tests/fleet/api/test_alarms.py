"""The alarm list as a person works it, through the HTTP API on SQLite and PostgreSQL: grouped by
cause (a dead bus over its device over the interlocks that lost their input), shelving for a
set time with a reason (maintainer and above, audited, back by itself or by hand), acknowledging
a selection or a whole site at once, and who reset a latched interlock on the gateway."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from fleet.models import AlarmShelf, Role
from fleet.registry import register_gateway
from gateway import wire
from tests.fleet.api_client import fleet_app, raised, send, user

pytestmark = pytest.mark.fleet


def event(event_id: int, key: str, severity: str, at: float, **changes: Any) -> wire.Event:
    return raised(event_id, key, severity, at).model_copy(update=changes)


class Site:
    """Site north: gw-1 whose RS-485 bus died (bus → elevator-1 → I5, I6 under it) and which
    has a fire alarm; gw-2 with a minor door alarm. Site south: gw-3 with one alarm."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.now = time.time()
        self.seq: dict[str, int] = {}
        self.event_id: dict[str, int] = {}

    async def send(self, gateway: str, *events: wire.Event) -> None:
        site = "south" if gateway == "gw-3" else "north"
        self.seq[gateway] = self.seq.get(gateway, 0) + 1
        batch = wire.EventBatch(seq=self.seq[gateway], at=self.now, events=list(events))
        await send(self.app, site, gateway, batch)

    def next_id(self, gateway: str) -> int:
        self.event_id[gateway] = self.event_id.get(gateway, 0) + 1
        return self.event_id[gateway]

    async def raise_(self, gateway: str, key: str, severity: str, ago: float, **kw: Any) -> None:
        at = self.now - ago
        await self.send(gateway, event(self.next_id(gateway), key, severity, at, **kw))

    async def clear(self, gateway: str, key: str, ago: float, by: str | None = None) -> None:
        at = self.now - ago
        cleared = event(self.next_id(gateway), key, "major", at, kind="cleared", by=by)
        await self.send(gateway, cleared)


async def north(app: FastAPI) -> Site:
    async with app.state.sessions() as session:
        for site_name, gateway in (("north", "gw-1"), ("north", "gw-2"), ("south", "gw-3")):
            await register_gateway(session, site_name, gateway)
        await session.commit()
    site = Site(app)
    await site.raise_("gw-1", "bus:rs485", "major", 60)
    await site.raise_("gw-1", "comm:elevator-1", "minor", 59, suppressed_by="bus:rs485")
    await site.raise_("gw-1", "I5:unavailable", "major", 50, suppressed_by="comm:elevator-1")
    await site.raise_("gw-1", "I6:unavailable", "critical", 49, suppressed_by="comm:elevator-1")
    await site.raise_("gw-1", "fire", "critical", 40)
    await site.raise_("gw-2", "door", "minor", 30)
    await site.raise_("gw-3", "export", "major", 20)
    return site


def tree(groups: list[dict[str, Any]]) -> list[Any]:
    """(gateway/key, [children…]) of each group, in the order served."""
    return [
        (f"{g['gateway']}/{g['key']}", tree(g["suppressed"])) if g["suppressed"] else g["key"]
        for g in groups
    ]


def ids(alarms: list[dict[str, Any]]) -> dict[str, int]:
    return {a["key"]: a["id"] for a in alarms}


async def audit_of(app: FastAPI, action: str) -> list[dict[str, Any]]:
    async with user(app, f"auditor-{time.monotonic_ns()}", Role.ADMIN) as admin:
        entries = (await admin.get("/api/audit")).json()
    return [e for e in entries if e["action"] == action]


async def test_suppressed_alarms_are_listed_under_their_cause(fleet_db_url: str) -> None:
    async with fleet_app(fleet_db_url) as app:
        site = await north(app)
        async with user(app, "vi", Role.VIEWER) as viewer:
            grouped = (await viewer.get("/api/alarms/by-cause")).json()
            flat = (await viewer.get("/api/alarms", params={"site": "north"})).json()
            # the device answers again: its alarm and the interlocks' clear, the bus stays
            for key in ("I5:unavailable", "I6:unavailable", "comm:elevator-1"):
                await site.clear("gw-1", key, 10)
            # a new interlock alarm that only names the cleared device stands on its own
            await site.raise_("gw-1", "I7:unavailable", "major", 5, suppressed_by="comm:elevator-1")
            later = (await viewer.get("/api/alarms/by-cause", params={"site": "north"})).json()
            everything = await viewer.get("/api/alarms/by-cause", params={"state": "all"})

    assert tree(grouped) == [
        "fire",
        "export",  # newer than the bus alarm, as severe
        ("gw-1/bus:rs485", [("gw-1/comm:elevator-1", ["I6:unavailable", "I5:unavailable"])]),
        "door",
    ]
    bus = grouped[2]
    assert bus["suppressed_total"] == 3
    assert bus["suppressed"][0]["suppressed_total"] == 2
    assert bus["suppressed"][0]["suppressed"][0]["suppressed_by"] == "comm:elevator-1"
    # the flat list still has every alarm, each naming its cause
    assert len(flat) == 6
    assert {a["key"]: a["suppressed_by"] for a in flat}["I5:unavailable"] == "comm:elevator-1"

    assert tree(later) == ["fire", "I7:unavailable", "bus:rs485", "door"]
    # all alarms, cleared ones included: the children stay under the cause they stood under
    assert everything.status_code == 200, everything.text
    everything_tree = tree(everything.json())
    assert (
        "gw-1/bus:rs485",
        [("gw-1/comm:elevator-1", ["I6:unavailable", "I5:unavailable"])],
    ) in everything_tree
    assert "I7:unavailable" in everything_tree


async def test_a_maintainer_shelves_an_alarm_for_a_while_with_a_reason(fleet_db_url: str) -> None:
    shelf = {"minutes": 30, "reason": "loop sensor replaced on Tuesday"}
    async with fleet_app(fleet_db_url) as app:
        site = await north(app)
        fire = ids(await _all(app))["fire"]
        async with user(app, "vi", Role.VIEWER) as viewer:
            denied = await viewer.post(f"/api/alarms/{fire}/shelve", json=shelf)
        async with user(app, "ma", Role.MAINTAINER) as maintainer:
            shelved = await maintainer.post(f"/api/alarms/{fire}/shelve", json=shelf)
            open_now = ids((await maintainer.get("/api/alarms")).json())
            shelved_list = (await maintainer.get("/api/alarms", params={"state": "shelved"})).json()
            grouped = tree((await maintainer.get("/api/alarms/by-cause")).json())
            # the gateway clears it and raises it again: still the shelved alarm
            await site.clear("gw-1", "fire", 35)
            await site.raise_("gw-1", "fire", "critical", 30)
            again = [a for a in (await maintainer.get("/api/alarms")).json() if a["key"] == "fire"]
            shelved_again = (
                await maintainer.get("/api/alarms", params={"state": "shelved"})
            ).json()
            # half an hour later
            await _age_shelves(app, timedelta(minutes=31))
            back = [a for a in (await maintainer.get("/api/alarms")).json() if a["key"] == "fire"]
        [entry] = await audit_of(app, "alarm.shelve")
    assert denied.status_code == 403
    assert denied.json() == {"detail": "shelving alarms needs the maintainer role; you are viewer"}

    assert shelved.status_code == 200, shelved.text
    body = shelved.json()
    assert body["shelf"]["shelved_by"] == "ma"
    assert body["shelf"]["reason"] == "loop sensor replaced on Tuesday"
    until = body["shelf"]["until"]
    assert "fire" not in open_now
    assert "fire" not in grouped
    assert [(a["key"], a["shelf"]["until"]) for a in shelved_list] == [("fire", until)]

    assert again == []
    assert sorted(a["key"] for a in shelved_again) == ["fire", "fire"]
    assert [a["shelf"] for a in back] == [None]  # back by itself when the time is up
    assert (entry["actor"], entry["target"]) == ("user:ma", f"alarm:{fire}")
    assert entry["detail"]["reason"] == "loop sensor replaced on Tuesday"
    assert entry["detail"]["until"].startswith(until[:16])


async def test_a_shelf_ends_by_hand_and_a_shelved_cause_takes_its_children(
    fleet_db_url: str,
) -> None:
    async with fleet_app(fleet_db_url) as app:
        await north(app)
        bus = ids(await _all(app))["bus:rs485"]
        async with user(app, "ma", Role.MAINTAINER) as maintainer:
            bad = [
                await maintainer.post(f"/api/alarms/{bus}/shelve", json=body)
                for body in (
                    {"minutes": 0, "reason": "x"},
                    {"minutes": 7 * 24 * 60 + 1, "reason": "x"},
                    {"minutes": 5, "reason": "   "},
                    {"minutes": 5},
                )
            ]
            missing = await maintainer.post(
                "/api/alarms/99999/shelve", json={"minutes": 5, "reason": "x"}
            )
            await maintainer.post(
                f"/api/alarms/{bus}/shelve", json={"minutes": 5, "reason": "cabling"}
            )
            hidden = tree((await maintainer.get("/api/alarms/by-cause")).json())
            shelved = tree(
                (await maintainer.get("/api/alarms/by-cause", params={"state": "shelved"})).json()
            )
            unshelved = await maintainer.post(f"/api/alarms/{bus}/unshelve")
            twice = await maintainer.post(f"/api/alarms/{bus}/unshelve")
            shown = tree((await maintainer.get("/api/alarms/by-cause")).json())
        [entry] = await audit_of(app, "alarm.unshelve")
    assert [b.status_code for b in bad] == [422, 422, 422, 422]
    assert "reason" in bad[3].text
    assert missing.status_code == 404
    assert hidden == ["fire", "export", "door"]  # the bus and the four alarms under it
    assert shelved == [
        ("gw-1/bus:rs485", [("gw-1/comm:elevator-1", ["I6:unavailable", "I5:unavailable"])])
    ]
    assert unshelved.json()["shelf"] is None
    assert twice.status_code == 200
    assert shown[2][0] == "gw-1/bus:rs485"
    assert (entry["actor"], entry["detail"]["reason"]) == ("user:ma", "cabling")


async def test_acknowledging_a_selection_or_a_whole_site(fleet_db_url: str) -> None:
    async with fleet_app(fleet_db_url) as app:
        site = await north(app)
        by_key = ids(await _all(app))
        selection = [by_key["fire"], by_key["door"]]
        async with user(app, "vi", Role.VIEWER) as viewer:
            denied = await viewer.post("/api/alarms/ack", json={"ids": selection})
        async with user(app, "ma", Role.MAINTAINER) as maintainer:
            unknown = await maintainer.post("/api/alarms/ack", json={"ids": [*selection, 99999]})
            untouched = await _unacked(maintainer)
            both = await maintainer.post(
                "/api/alarms/ack", json={"ids": selection, "site": "north"}
            )
            neither = await maintainer.post("/api/alarms/ack", json={})
            nowhere = await maintainer.post("/api/alarms/ack", json={"site": "west"})
            await maintainer.post(f"/api/alarms/{by_key['door']}/ack")
            picked = await maintainer.post("/api/alarms/ack", json={"ids": selection})
            after_pick = await _unacked(maintainer)

            await maintainer.post(
                f"/api/alarms/{by_key['bus:rs485']}/shelve",
                json={"minutes": 5, "reason": "cabling"},
            )
            seen = max(
                (await maintainer.get("/api/alarms", params={"site": "north"})).json(),
                key=lambda a: a["id"],
            )
            await site.raise_("gw-2", "smoke", "critical", 1)  # arrives while the person looks
            whole = await maintainer.post(
                "/api/alarms/ack", json={"site": "north", "up_to_id": seen["id"]}
            )
            after_site = await _unacked(maintainer)
            shelved = (await maintainer.get("/api/alarms", params={"state": "shelved"})).json()
        acks = await audit_of(app, "alarm.ack")
    assert denied.status_code == 403
    assert (unknown.status_code, unknown.json()) == (
        404, {"detail": "no alarm 99999: none acknowledged"},
    )  # fmt: skip
    assert len(untouched) == 7
    assert [r.status_code for r in (both, neither)] == [422, 422]
    assert (nowhere.status_code, nowhere.json()) == (404, {"detail": "no site 'west'"})
    assert picked.json() == {
        "acknowledged": [by_key["fire"]],
        "already_acknowledged": [by_key["door"]],
    }
    assert sorted(after_pick) == sorted(set(by_key) - {"fire", "door"})

    assert whole.status_code == 200, whole.text
    # all of north's alarms but the shelved bus alarm, and the smoke alarm that came after
    # the person looked; south's export alarm is another site's
    assert whole.json() == {
        "acknowledged": sorted(
            by_key[k] for k in ("comm:elevator-1", "I5:unavailable", "I6:unavailable")
        ),
        "already_acknowledged": [],
    }
    assert sorted(after_site) == ["export", "smoke"]
    assert [(a["key"], a["acked_at"]) for a in shelved] == [("bus:rs485", None)]
    assert sorted(e["detail"]["how"] for e in acks) == ["one", "selection", "site", "site", "site"]


async def _unacked(browser: httpx.AsyncClient) -> list[str]:
    return [
        a["key"] for a in (await browser.get("/api/alarms", params={"state": "unacked"})).json()
    ]


async def _all(app: FastAPI) -> list[dict[str, Any]]:
    async with login_as_reader(app) as reader:
        return list((await reader.get("/api/alarms", params={"state": "all"})).json())


def login_as_reader(app: FastAPI) -> Any:
    return user(app, f"reader-{time.monotonic_ns()}", Role.VIEWER)


async def _age_shelves(app: FastAPI, by: timedelta) -> None:
    """Time passes for the shelves (they end at ``until``)."""
    async with app.state.sessions() as session:
        for shelf in await session.scalars(select(AlarmShelf)):
            shelf.until -= by
        await session.commit()


async def test_the_reset_of_a_latched_interlock_shows_who_reset_it(fleet_db_url: str) -> None:
    async with fleet_app(fleet_db_url) as app:
        site = await north(app)
        await site.raise_("gw-1", "I3:charger-1", "major", 15)
        await site.clear("gw-1", "I3:charger-1", 5, by="pi")
        await site.clear("gw-2", "door", 5)
        async with user(app, "vi", Role.VIEWER) as viewer:
            every = (await viewer.get("/api/alarms", params={"state": "all"})).json()
    cleared = {a["key"]: (a["cleared_at"] is not None, a["cleared_by"]) for a in every}
    assert cleared["I3:charger-1"] == (True, "pi")
    assert cleared["door"] == (True, None)  # cleared by the gateway itself

"""The fleet asks a gateway for the batches its gaps are missing, stores what comes again
once, and shows what the gateway no longer has as lost with its range (SQLite, PostgreSQL)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from fleet.core.outbound import Outbound
from fleet.ingest.repair import GapRepair
from fleet.models import Role
from gateway import wire
from gateway.wire.repair import RepairReport, RepairRequest
from tests.fleet.api_client import fleet_app, user

pytestmark = pytest.mark.fleet
SITE, GW = "north", "gw-1"
NOW = time.time()


class Recorded(Outbound):
    """The fleet's outbound connection, what it would publish recorded."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, wire.Kind, bytes]] = []

    async def send(
        self, site: str, gateway: str, kind: wire.Kind, payload: bytes, *, retain: bool = False
    ) -> bool:
        self.sent.append((site, gateway, kind, payload))
        return True


def batch(seq: int) -> bytes:
    return wire.encode_telemetry(seq, NOW, [{"d": "pv", "p": "w", "v": seq, "q": "good", "t": NOW}])


async def test_gaps_are_asked_for_filled_once_and_lost_ranges_shown(fleet_db_url: str) -> None:
    async with fleet_app(fleet_db_url) as app, user(app, "root", Role.ADMIN) as admin:
        assert (await admin.post("/api/sites", json={"name": SITE})).is_success
        assert (await admin.post(f"/api/sites/{SITE}/gateways", json={"name": GW})).is_success
        telemetry = wire.topic(SITE, GW, wire.Kind.TELEMETRY)
        for seq in (1, 2, 6, 9):  # the broker dropped 3-5 and 7-8
            assert (await app.state.ingest.handle(telemetry, batch(seq))).status == "stored"

        outbound = Recorded()
        repair = GapRepair(app.state.sessions, lambda: outbound)
        assert await repair.ask() == 1
        [(site, gateway, kind, payload)] = outbound.sent
        assert (site, gateway, kind) == (SITE, GW, wire.Kind.REPAIR_REQUEST)
        request = wire.decode(RepairRequest, payload)
        assert (request.kind, request.ranges) == ("telemetry", [(3, 5), (7, 8)])
        assert await repair.ask() == 0  # not again before ASK_AGAIN_S

        # the gateway sends 4, 7 and 8 again (7 twice: stored once) and says 3 and 5 are gone
        for seq in (4, 7, 8, 7):
            await app.state.ingest.handle(telemetry, batch(seq))
        report = RepairReport(request=request.id, kind="telemetry", resent=3, lost=[(3, 3), (5, 5)])
        handled = await app.state.ingest.handle(
            wire.topic(SITE, GW, wire.Kind.REPAIR_REPORT), wire.encode(report)
        )
        assert handled.status == "stored"

        answer = (await admin.get("/api/ingest")).json()
        gaps: dict[str, list[dict[str, Any]]] = answer["gaps"]
        assert gaps["open"] == []
        lost = sorted(
            (g["site"], g["gateway"], g["kind"], g["first"], g["last"]) for g in gaps["lost"]
        )
        assert lost == [(SITE, GW, "telemetry", 3, 3), (SITE, GW, "telemetry", 5, 5)]
        assert answer["duplicates"] == 1
        assert answer["accepted"]["telemetry"] == 7  # each batch once

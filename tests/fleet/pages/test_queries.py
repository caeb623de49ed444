"""The screens' own queries on SQLite and PostgreSQL: what needs a person per site (a window
function picks each site's worst alarm) and a state point's changes (LAG over its samples)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.i18n import LANGUAGES
from fleet.i18n.negotiate import from_accept_language
from fleet.queries.attention import attention
from fleet.queries.history import device_id
from fleet.queries.states import state_history
from fleet.registry import register_gateway
from gateway.devices.profile import DeviceKind
from hil_tests.fleet_scene import CRITICAL, registrations, scene
from tests.fleet.api_client import fleet_app, send

pytestmark = pytest.mark.fleet


async def test_what_needs_a_person_and_a_states_changes(fleet_db_url: str) -> None:
    now = time.time()
    async with fleet_app(fleet_db_url) as app:
        async with app.state.sessions() as session, session.begin():
            for site, gateway, title in registrations():
                await register_gateway(session, site, gateway, title)
        for message in scene(now):
            await send(app, message.site, message.gateway, message.payload)
        async with app.state.sessions() as session:
            sites = await attention(session)
            elevator = await device_id(session, "lianhua", "gw-01", "elv-1")
            assert elevator is not None
            until = datetime.fromtimestamp(now, UTC)
            whole = await state_history(
                session, elevator, "service_mode", until - timedelta(hours=1), until
            )
            later = await state_history(
                session, elevator, "service_mode", until - timedelta(minutes=45), until
            )
            cut = await state_history(
                session, elevator, "service_mode", until - timedelta(hours=1), until, limit=2
            )
    assert [s.name for s in sites] == ["lianhua", "harbour", "sunny"]
    lianhua, harbour, sunny = sites
    assert lianhua.worst_alarm is not None
    assert lianhua.worst_alarm.message == CRITICAL  # not the suppressed one under it
    assert lianhua.open_alarms == 3
    assert lianhua.gateways_never_connected == ["gw-02"]
    assert lianhua.out_of_service == {
        DeviceKind.ELEVATOR: ["elv-1"],
        DeviceKind.CHARGER: ["evse-1"],
        DeviceKind.PV_INVERTER: ["pv-1"],
    }
    assert harbour.gateways_offline == ["gw-03"]
    assert not sunny.needs_a_person
    assert whole.initial is None
    assert [c.value for c in whole.changes] == [1, 2, 1, 0]
    assert later.initial == 1  # 50 min ago it was in normal service
    assert [c.value for c in later.changes] == [2, 1, 0]
    assert [c.value for c in cut.changes] == [1, 2]
    assert cut.truncated


@given(st.text(max_size=200))
def test_any_accept_language_header_gets_one_of_our_languages(header: str) -> None:
    assert from_accept_language(header) in LANGUAGES

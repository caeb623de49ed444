"""Applying sites in place on a running gateway (hypothesis): chargers moved between buses,
buses re-addressed, added and removed, in any order — afterwards every device of the site has
exactly one poller, on its own bus's running scheduler; a device and a bus that did not change
keep the very poller and scheduler they had; the interlocks are the site's. The buses are TCP
connections to ports nobody listens on: the runtime runs, nothing answers, which is all the
bookkeeping needs (the rig applies to answering devices in hil_tests/test_desired_config.py)."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.apply import InPlace
from gateway.runtime import Gateway
from gateway.site import SiteConfig, parse_site

BUSES = ("b1", "b2", "b3")
CHARGERS = ("c1", "c2", "c3", "c4")

# a site: each bus's port (None: no such bus), each charger's bus (None: not on the site)
sites = st.fixed_dictionaries(
    {
        "ports": st.tuples(
            st.sampled_from([41001, 41002]),  # b1 always there: a site has a bus
            *(st.sampled_from([None, 41001, 41002]) for _ in BUSES[1:]),
        ),
        "chargers": st.tuples(*(st.sampled_from([None, 0, 1, 2]) for _ in CHARGERS)),
    }
)


def site(ports: tuple[int | None, ...], chargers: tuple[int | None, ...]) -> SiteConfig:
    text = '[gateway]\nsite = "s1"\nid = "gw-1"\n\n[safety.charger_lockout]\n'
    for name, port in zip(BUSES, ports, strict=True):
        if port is not None:
            text += (
                f'\n[[buses]]\nname = "{name}"\nkind = "tcp"\nhost = "127.0.0.1"\nport = {port}\n'
            )
    unit = 0
    for name, bus in zip(CHARGERS, chargers, strict=True):
        if bus is not None and ports[bus] is not None:
            unit += 1
            text += (
                f'\n[[devices]]\nname = "{name}"\nprofile = "EVSE-HEC"\n'
                f'bus = "{BUSES[bus]}"\nunit_id = {unit}\n'
            )
    if unit == 0:
        text = "devices = []\n" + text  # a top-level key: before every table
    return parse_site(text, "site.toml")


@settings(max_examples=25, deadline=None)
@given(sites, st.lists(sites, min_size=1, max_size=3))
def test_any_sequence_of_sites_is_applied_in_place_consistently(
    first: dict[str, tuple[int | None, ...]], then: list[dict[str, tuple[int | None, ...]]]
) -> None:
    asyncio.run(_run(site(**first), [site(**s) for s in then]))


async def _run(first: SiteConfig, then: list[SiteConfig]) -> None:
    async with Gateway(first) as gw, InPlace(gw) as in_place:
        for new in then:
            before_pollers = dict(gw.pollers)
            before_schedulers = dict(gw.schedulers)
            unchanged = in_place.unchanged_devices(new)
            kept_buses = {b.name for b in new.buses if b in gw.site.buses}
            await in_place.apply(new)
            assert gw.site is new
            assert set(gw.schedulers) == {b.name for b in new.buses}
            assert set(gw.pollers) == {d.name for d in new.devices}
            for dev in new.devices:
                assert gw.schedulers[dev.bus].pollers[dev.name] is gw.pollers[dev.name]
            on_buses = [name for s in gw.schedulers.values() for name in s.pollers]
            assert sorted(on_buses) == sorted(gw.pollers)  # each exactly once
            for name in unchanged:
                assert gw.pollers[name] is before_pollers[name]
            for name in kept_buses:
                assert gw.schedulers[name] is before_schedulers[name]
                assert not gw.bus_tasks[name].done()
            assert set(gw.engine.rules) == {i.name for i in new.all_interlocks()}
            assert set(gw.keeper.kept) == {d.name for d in new.devices}
            assert {device for device, _ in gw.actuator.targets} <= set(gw.pollers)
            await asyncio.sleep(0)

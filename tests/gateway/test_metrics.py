"""The gateway's Prometheus metrics (``[metrics]`` in the site config), scraped over HTTP from
the real runtime polling simulated chargers over a pty (RTU), with an uplink whose broker is
not there: the bus and device counters move when a charger stops answering, the control loop's
skipped cycles and lateness when a cycle hangs, the outbox fills; no table, no port."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import MetricsConfig, serving
from gateway.runtime import Gateway
from gateway.site import parse_site
from gateway.uplink.config import UplinkConfig
from hil_tests.broker import free_port
from hil_tests.gateway_rig import Rig, rtu_bus, site_config, tcp_bus
from hil_tests.rig.site import SimulatedSite

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
DEVICES = [("charger-1", "EVSE-HEC", "rs485", 1), ("charger-2", "EVSE-HEC", "rs485", 2)]


def scrape(port: int) -> Samples:
    answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert answer.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


async def test_the_gateway_metrics_move_with_its_buses_its_control_loop_and_outbox(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = site_config(
        rtu_bus("rs485", 115200), DEVICES, poll="safety = 0.2\ntelemetry = 0.2\nslow = 1"
    )
    async with SimulatedSite(config, lively=False) as site:
        resolved = site.resolved().model_copy(
            update={
                "metrics": MetricsConfig(port=port),
                "uplink": UplinkConfig(broker=f"mqtt://127.0.0.1:{free_port()}"),
            }
        )
        async with Gateway(resolved, state_dir=tmp_path) as gw:
            rig = Rig(site, gw)
            await rig.wait_for(lambda: rig.all_good("charger-2"), what="charger-2 read")
            before = await asyncio.to_thread(scrape, port)
            faults, unit = site.faults_of("charger-2")
            faults.of(unit).dead = True
            gw.supervisor.inject_stall(0.6)  # the next cycle hangs: two or more are skipped
            await rig.wait_for(
                lambda: gw.image.offline("charger-2") and gw.supervisor.loop.skipped > 0
                and gw.uplink is not None and gw.uplink.depth > 0,
                within=20, what="charger-2 offline, a cycle skipped, the outbox filling",
            )  # fmt: skip
            after = await asyncio.to_thread(scrape, port)
    assert refused(port)  # the server stops with the gateway

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    lan = {"bus": "rs485"}
    one, two = {**lan, "device": "charger-1"}, {**lan, "device": "charger-2"}
    [info] = [dict(labels) for name, labels in after if name == "doorstep_gateway_info"]
    assert (info["site"], info["gateway"]) == ("hil", "gw-hil")
    assert moved("doorstep_gateway_bus_transactions_total", **lan) > 0
    assert moved("doorstep_gateway_device_transactions_total", **one) > 0
    assert moved("doorstep_gateway_bus_timeouts_total", **lan) > 0
    assert moved("doorstep_gateway_device_timeouts_total", **two) > 0
    assert moved("doorstep_gateway_device_timeouts_total", **one) == 0
    assert moved("doorstep_gateway_bus_busy_seconds_total", **lan) > 0
    assert 0 < value(after, "doorstep_gateway_bus_utilisation_ratio", **lan) < 1
    assert value(after, "doorstep_gateway_bus_latency_seconds", **lan, quantile="0.99") > 0
    assert value(before, "doorstep_gateway_device_offline", **two) == 0
    assert value(after, "doorstep_gateway_device_offline", **two) == 1

    assert moved("doorstep_gateway_control_cycles_total") > 0
    assert moved("doorstep_gateway_control_skipped_cycles_total") >= 2
    # a hung cycle is skipped over, not run late: the loop stays on its grid
    p50 = value(after, "doorstep_gateway_control_lateness_seconds", quantile="0.5")
    assert 0 <= p50 <= value(after, "doorstep_gateway_control_lateness_max_seconds")
    assert value(after, "doorstep_gateway_control_period_seconds") > 0

    assert value(after, "doorstep_gateway_uplink_connected") == 0
    assert value(after, "doorstep_gateway_outbox_messages") > 0  # nobody takes them
    assert value(after, "doorstep_gateway_outbox_dropped_total") == 0
    assert value(after, "doorstep_gateway_process_resident_memory_bytes") > 0


def test_metrics_are_off_without_the_table_and_local_by_default() -> None:
    text = (
        '[gateway]\nsite = "s"\nid = "gw"\n' + tcp_bus("lan")
        + '[[devices]]\nname = "c"\nprofile = "EVSE-HEC"\nbus = "lan"\nunit_id = 1\n'
    )  # fmt: skip
    assert parse_site(text, "s.toml").metrics is None
    on = parse_site(text + "\n[metrics]\nport = 9108\n", "s.toml").metrics
    assert on == MetricsConfig(port=9108, host="127.0.0.1")
    with pytest.raises(Exception, match=r"metrics\.port"):
        parse_site(text + "\n[metrics]\nport = 0\n", "s.toml")


def test_a_port_that_cannot_be_had_is_told_and_the_gateway_runs_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.ERROR), serving(cast(Any, None), MetricsConfig(port=port), ""):
            pass  # no exception: the gateway goes on
    [record] = caplog.records
    assert f"cannot listen on 127.0.0.1 port {port}" in record.getMessage()
    assert "[metrics] host and port" in record.getMessage()

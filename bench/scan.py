"""Time per unit id of ``gateway scan`` on the rig's RTU line at 9600 Bd.

The line holds an EVSE-HEC charger, an Eastron SDM630, a SunSpec meter and a CHINT DTSU666
(ids 1-4); ids 5-12 are silent. The scan runs with its defaults (0.3 s for a silent id, a
3 s budget for an answering one) several times; reported: min/max seconds per silent id,
min/max per answering id, and the whole scan, with the load average. The stated bounds are
the defaults: a silent id costs its probe timeout plus the line's t3.5, an answering id what
its questions take on the wire (each bounded by the budget).
"""

from __future__ import annotations

import asyncio
import os
import time

from bench.report import write_result
from gateway.bus.rtu import RtuTransport
from gateway.bus.scan import Found, Scanner, ScanSettings
from gateway.devices.profile import available_models, load_profile
from hil_tests.gateway_rig import rtu_bus, site_config
from hil_tests.rig.site import SimulatedSite

NAME = "scan"
BAUD = 9600
RUNS = 3
LINE = [
    ("charger", "EVSE-HEC", "line", 1),
    ("sdm", "EASTRON-SDM630", "line", 2),
    ("meter", "SUNSPEC-METER", "line", 3),
    ("chint", "CHINT-DTSU666", "line", 4),
]
UNITS = tuple(range(1, 13))


async def one_scan() -> tuple[list[float], list[float], float]:
    config = site_config(rtu_bus("line", BAUD), LINE)
    profiles = {m: load_profile(m) for m in available_models()}
    async with SimulatedSite(config, lively=False) as site:
        silent, answering = [], []
        last = time.monotonic()

        def progress(unit: int, found: Found | None) -> None:
            nonlocal last
            now = time.monotonic()
            (silent if found is None else answering).append(now - last)
            last = now

        started = time.monotonic()
        async with RtuTransport("line", site.lines["line"].client_path, BAUD) as transport:
            await Scanner(transport, profiles, ScanSettings(UNITS), progress).scan()
        return silent, answering, time.monotonic() - started


def main() -> None:
    silent: list[float] = []
    answering: list[float] = []
    totals: list[float] = []
    for _ in range(RUNS):
        s, a, total = asyncio.run(one_scan())
        silent += s
        answering += a
        totals.append(total)
    load = os.getloadavg()
    write_result(
        NAME,
        {
            "silent_id_min_s": min(silent),
            "silent_id_max_s": max(silent),
            "answering_id_min_s": min(answering),
            "answering_id_max_s": max(answering),
            "scan_12_ids_min_s": min(totals),
            "scan_12_ids_max_s": max(totals),
            "load_1min": load[0],
        },
        targets={"silent_id_max_s": "<= 0.3 s + t3.5", "answering_id_max_s": "<= 3 s budget"},
        units=dict.fromkeys(("silent_id_max_s", "answering_id_max_s"), "s"),
    )


if __name__ == "__main__":
    main()

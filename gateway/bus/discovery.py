"""SunSpec discovery on a running bus: a SunSpec device is polled once its model chain is
found.

A SunSpec profile names its points by model and offset (:mod:`gateway.devices.sunspec`), so
its poller is not ready at start. :func:`discover_sunspec` walks the device's model chain
through the bus scheduler, at the slow poll class's priority so that it never delays safety
reads or commands, places the profile's points at the addresses found and wakes the
scheduler. A failed walk (a bus error, no 'SunS' marker, a broken chain) is logged and tried
again after a back-off from ``DISCOVERY_RETRY_S[0]`` doubling up to ``DISCOVERY_RETRY_S[1]``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.backoff import Backoff
from gateway.bus.pdu import Read
from gateway.bus.poller import CLASS_PRIORITY, DevicePoller
from gateway.bus.scheduler import BusScheduler
from gateway.devices import sunspec
from gateway.devices.profile import PollClass, Table
from gateway.errors import GatewayError

log = logging.getLogger(__name__)

DISCOVERY_RETRY_S = (1.0, 30.0)


async def discover_sunspec(poller: DevicePoller, scheduler: BusScheduler) -> None:
    """Walk the SunSpec model chain until it is found, then start polling the device."""
    bases = (
        (poller.device.sunspec_base,)
        if poller.device.sunspec_base is not None
        else sunspec.DEFAULT_BASES
    )

    async def read(address: int, count: int) -> list[int]:
        request = Read(Table.HOLDING, address, count)
        return await scheduler.request(poller.name, request, CLASS_PRIORITY[PollClass.SLOW])

    retry = Backoff(*DISCOVERY_RETRY_S)
    while True:
        try:
            starts = await sunspec.discover(read, bases)
            poller.place(sunspec.place(poller.profile, starts), time.monotonic())
            scheduler.wake()
        except GatewayError as exc:  # a BusError, or a SunSpecError
            pause = retry.next()
            log.warning(
                "%s: SunSpec discovery failed (%s); retrying in %.0f s", poller.name, exc, pause
            )
            await asyncio.sleep(pause)
            continue
        log.info("%s: SunSpec models at %s", poller.name, starts)
        return

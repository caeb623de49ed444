"""The SIO-1 firmware a release carries, installed on the board by the running gateway.

What ``gateway flash`` does for a technician, done by the OTA agent at the update's safe
moment (docs/updates.md#the-sio-1-firmware): the same atomic copy over the board's USB REPL
(:func:`gateway.flash.install.install`: temporary names, SHA-256 computed on the board, renames,
``main.py`` last), then the same Modbus check that the board answers with the new version
(:func:`gateway.flash.verify.verify_sio`).

The board's data channel is the runtime's SIO-1 bus. For the copy the runtime lets go of the
board (:func:`released`): the claim protocol and the heartbeats stop, the bus's port is closed
(the check after the copy opens it exclusively) and the board's points read OFFLINE; after,
the port is opened again and the board is read back and claimed as after any restart. The
board's REPL port is given per board (``gateway run --ota-sio1-repl sio=/dev/ttyACM0``).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from gateway.bus.breaker import BreakerState
from gateway.bus.config import RtuBus
from gateway.bus.rtu import RtuTransport
from gateway.errors import GatewayError
from gateway.flash.firmware import Firmware, load_firmware
from gateway.flash.install import Request, install
from gateway.flash.verify import verify_sio
from gateway.image import Quality
from gateway.ota.bundle import parse_version

if TYPE_CHECKING:
    from gateway.control.safety_io import SafetyIo
    from gateway.runtime import Gateway

log = logging.getLogger(__name__)

#: how long the board may take to answer its new version after its reset
VERIFY_WITHIN_S = 20.0
#: how long the runtime waits for the board to be claimed again after the copy
RECLAIM_WITHIN_S = 30.0


def version_text(raw: int) -> str:
    """IR 1 (``major << 8 | minor``) as ``major.minor``."""
    return f"{raw >> 8}.{raw & 0xFF}"


def older(running: str, wanted: str) -> bool:
    """Whether firmware ``running`` is older than ``wanted`` (both ``major.minor``)."""
    return parse_version(running) < parse_version(wanted)


@dataclass(frozen=True)
class Board:
    """An SIO-1 the agent can reach: its device name, REPL port, data bus and unit id."""

    device: str
    repl_port: str
    bus: str
    data_port: str
    unit_id: int


def board_of(gateway: Gateway, sio: SafetyIo, repl_ports: Mapping[str, str]) -> Board | str:
    """The board behind ``sio``, or why the agent cannot install on it."""
    repl = repl_ports.get(sio.device)
    if repl is None:
        return (
            f"no REPL port given for {sio.device} "
            f"(gateway run --ota-sio1-repl {sio.device}=/dev/ttyACM0)"
        )
    device = gateway.pollers[sio.device].device
    bus = gateway.site.bus(device.bus)
    if not isinstance(bus, RtuBus):
        return f"{sio.device} is not on a serial data channel"
    return Board(sio.device, repl, bus.name, bus.port, device.unit_id)


@contextlib.asynccontextmanager
async def released(gateway: Gateway, sio: SafetyIo) -> AsyncIterator[None]:
    """The runtime lets go of ``sio``'s board and its data port, and takes them back after.

    Inside, nothing of this gateway writes to the board or holds its port; the devices of
    its bus read OFFLINE (an interlock reading the board's inputs treats them as unknown,
    as for a board that stops answering). After, the port is open again, every device of
    the bus is probed and read whole at once, and the board must be read back before it is
    claimed again (docs/safety.md#restarts)."""
    gw = gateway
    bus = gw.pollers[sio.device].device.bus
    scheduler = gw.schedulers[bus]
    transport = scheduler.transport
    supervisor = gw.supervisor
    if sio in supervisor.safety_ios:
        supervisor.safety_ios.remove(sio)  # no claim sequence from now on
    silence(gateway, sio.device)  # and no heartbeat
    if isinstance(transport, RtuTransport):
        async with transport._lock:  # no transaction of the bus in flight
            await transport.__aexit__(None, None, None)
    for device in scheduler.pollers:
        gw.image.mark_device(device, Quality.OFFLINE)
    log.info("ota: %s released for its firmware (bus %s closed)", sio.device, bus)
    try:
        yield
    finally:
        if isinstance(transport, RtuTransport):
            try:
                await transport.__aenter__()
            except GatewayError as exc:  # the scheduler's own retries take it from here
                log.error("ota: bus %s does not open again: %s", bus, exc)
        now = time.monotonic()
        for poller in scheduler.pollers.values():  # read back everything, at once
            if poller.breaker.state is BreakerState.OPEN:
                poller.breaker.next_probe_at = now
            for cycle in poller.cycles.values():
                cycle.next_due = now
        scheduler.wake()
        sio.lost()  # claim again from the start, after a fresh read-back
        kept = gw.keeper.kept.get(sio.device)
        if kept is not None:
            kept.last_at = -math.inf  # heartbeats again, the first at once
        supervisor.safety_ios.append(sio)
        log.info("ota: %s taken back (bus %s open)", sio.device, bus)


def silence(gateway: Gateway, device: str) -> None:
    """No more heartbeats to ``device`` from now on (one on its way still lands). Its entry
    stays with the watchdog keeper, which counts the answer of that last one."""
    kept = gateway.keeper.kept.get(device)
    if kept is not None:
        kept.last_at = math.inf  # never due


def copy_firmware(board: Board, firmware: Firmware) -> str:
    """The atomic copy of ``gateway flash`` onto ``board`` (blocking: run it in a thread);
    what the flasher said, one line per message. FlashError (a GatewayError) on failure."""
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    request = Request(
        port=board.repl_port,
        identity=None,  # the board keeps its own identity file
        unit_id=None,
        dry_run=False,
        verify_port=None,
        verify_timeout=VERIFY_WITHIN_S,
    )
    try:
        install(request, firmware, console)
    finally:
        for line in out.getvalue().splitlines():
            if line.strip():
                log.info("ota: %s: %s", board.device, line.strip())
    return out.getvalue()


async def flash(board: Board, sources: Path) -> str:
    """Install the firmware in ``sources`` on ``board`` and check that it answers with its
    version: the check's summary, or GatewayError saying what failed."""
    firmware = await asyncio.to_thread(load_firmware, sources)
    await asyncio.to_thread(copy_firmware, board, firmware)
    return await verify_sio(board.data_port, board.unit_id, firmware.version, VERIFY_WITHIN_S)


def carried_version(sources: Path) -> str | None:
    """The firmware version of the sources a slot carries (None when it carries none)."""
    if not (sources / "version.py").is_file():
        return None
    try:
        return load_firmware(sources).version_text
    except GatewayError:
        return None

"""Commands to devices from outside the control loop: a value written to a point, a profile
command, a locker door opened for a pick-up or a deposit.

Each goes to the device's bus scheduler at command priority, ahead of all polling; a write
needs the device discovered (SunSpec) and, for a point with a SunSpec scale factor, that
scale factor read. Deposits into a locker are refused while an interlock suspends them (a
fire alarm: ``inhibit = "LOCKERS.deposits"``); pick-ups never are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from gateway.bus.pdu import Write
from gateway.bus.poller import COMMAND_PRIORITY, DevicePoller
from gateway.bus.scheduler import BusScheduler
from gateway.control.actuator import Actuator
from gateway.devices import codec
from gateway.errors import GatewayError, InterlockError
from gateway.image import ProcessImage


class DeviceCommands:
    """Writes and commands to the devices of a running site (``Gateway.commands``)."""

    def __init__(
        self,
        image: ProcessImage,
        actuator: Actuator,
        pollers: Mapping[str, DevicePoller],
        schedulers: Mapping[str, BusScheduler],
    ) -> None:
        self._image = image
        self._actuator = actuator
        self._pollers = pollers
        self._schedulers = schedulers

    async def write(self, device: str, point: str, value: codec.Value) -> None:
        """Write an engineering value to a writable point, ahead of all polling."""
        poller = self._poller(device)
        if not poller.ready:
            raise GatewayError(f"{device}: not discovered yet; cannot write {point!r}")
        p = poller.profile.point(point)
        if not p.writable or p.address is None:
            raise GatewayError(f"{device}: point {point!r} is not writable")
        sf = None
        if p.scale_factor is not None:
            sf_value = self._image.value(device, p.scale_factor)
            if not isinstance(sf_value, int):
                raise GatewayError(f"{device}: scale factor {p.scale_factor!r} not known yet")
            sf = sf_value
        request = Write(p.table, p.address, tuple(codec.encode(p, value, sf)))
        await self._schedulers[poller.device.bus].request(device, request, COMMAND_PRIORITY)

    async def command(self, device: str, name: str, value: codec.Value = None) -> None:
        """Run a profile command: a fixed value, or the one given."""
        poller = self._poller(device)
        cmd = next((c for c in poller.profile.commands if c.name == name), None)
        if cmd is None:
            known = ", ".join(c.name for c in poller.profile.commands)
            raise GatewayError(f"{device}: no command {name!r} (commands: {known})")
        if cmd.value is None and value is None:
            raise GatewayError(f"{device}: command {name!r} needs a value")
        await self.write(device, cmd.point, cmd.value if cmd.value is not None else value)

    async def open_door(
        self, device: str, door: int, *, purpose: Literal["pickup", "deposit"]
    ) -> None:
        """Pulse a locker door open; deposits are refused while an interlock suspends them
        (a fire alarm), pick-ups never are."""
        if purpose == "deposit":
            holders = self._actuator.inhibited_by(f"{device}.deposits")
            if holders:
                raise InterlockError(
                    f"{device}: deposits are suspended by {', '.join(holders)}; pick-ups only"
                )
        await self.write(device, f"unlock_{door}", True)

    def _poller(self, device: str) -> DevicePoller:
        try:
            return self._pollers[device]
        except KeyError:
            known = ", ".join(self._pollers)
            raise GatewayError(f"unknown device {device!r} (devices: {known})") from None

"""What a site config says about its buses and devices: the bus layer's own configuration.

The ``[[buses]]`` and ``[[devices]]`` tables and the ``[poll]`` periods, validated strictly;
:mod:`gateway.site` puts them together with the rest of a site, and the bus layer reads only
these (it knows nothing of interlocks or the uplink).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from gateway.devices.profile import PollClass
from gateway.validation import Strict

STANDARD_BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=48)]


class PollPeriods(Strict):
    """Seconds between reads of each poll class."""

    safety: float = Field(default=0.2, gt=0, le=60)
    telemetry: float = Field(default=1.0, gt=0, le=3600)
    slow: float = Field(default=30.0, gt=0, le=86400)

    def period(self, cls: PollClass) -> float | None:
        return None if cls is PollClass.NEVER else float(getattr(self, cls.value))


class PollOverrides(Strict):
    safety: float | None = Field(default=None, gt=0, le=60)
    telemetry: float | None = Field(default=None, gt=0, le=3600)
    slow: float | None = Field(default=None, gt=0, le=86400)


class RtuBus(Strict):
    """An RS-485 (or USB serial) line: one master, up to 247 units."""

    name: Name
    kind: Literal["rtu"]
    port: str
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8

    @field_validator("baudrate")
    @classmethod
    def _standard_rate(cls, v: int) -> int:
        if v not in STANDARD_BAUDRATES:
            rates = ", ".join(map(str, STANDARD_BAUDRATES))
            raise ValueError(f"{v} is not a standard rate ({rates})")
        return v


class TcpBus(Strict):
    """A Modbus TCP endpoint (a device, or a TCP-to-RTU gateway with several units)."""

    name: Name
    kind: Literal["tcp"]
    host: str
    port: int = 502

    @field_validator("port")
    @classmethod
    def _port_range(cls, v: int) -> int:
        if not 1 <= v <= 65535:
            raise ValueError(f"{v} is outside 1..65535")
        return v


Bus = Annotated[RtuBus | TcpBus, Field(discriminator="kind")]


class Device(Strict):
    name: Name
    profile: str
    bus: str
    unit_id: int
    #: Minimum silence between two requests to this unit (some chargers need 100 ms).
    min_gap_ms: float = Field(default=0, ge=0, le=10000)
    poll: PollOverrides = PollOverrides()
    #: Where to probe for the SunSpec marker (SunSpec profiles only).
    sunspec_base: int | None = Field(default=None, ge=0, le=65535)
    #: The device's communication watchdog, written at start (devices with a watchdog only);
    #: without it the device keeps its own setting. Never 0: some devices then ignore it.
    watchdog_timeout_s: float | None = Field(default=None, gt=0, le=3600)

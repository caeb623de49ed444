"""The gateway's exception tree.

Every error a user can meet derives from :class:`GatewayError` and names the input, the
value and what was expected. Lower-level errors (pymodbus, pyserial, OS) are translated into
this tree at one place each, so callers never catch a library's exception.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error raised by the gateway."""


class ProfileError(GatewayError):
    """A device profile file is malformed or inconsistent."""


class ConfigError(GatewayError):
    """A site config is malformed or refers to something that does not exist.

    ``problems`` holds one line per problem, each starting with the exact key,
    e.g. ``devices[3].unit_id: 300 is outside 1..247``.
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


class CodecError(GatewayError):
    """A value cannot be encoded into (or decoded from) a point's registers."""


class BusError(GatewayError):
    """A Modbus transaction failed. Subclasses say how."""

    def __init__(self, bus: str, unit_id: int, message: str) -> None:
        self.bus = bus
        self.unit_id = unit_id
        super().__init__(f"bus {bus!r} unit {unit_id}: {message}")


class BusTimeout(BusError):
    """No complete response arrived within the device's timeout."""


class FrameError(BusError):
    """A response arrived but was corrupt (bad CRC, wrong length, wrong unit)."""


class ModbusExceptionResponse(BusError):
    """The device answered with a Modbus exception (e.g. 02 illegal data address)."""

    def __init__(self, bus: str, unit_id: int, function_code: int, exception_code: int) -> None:
        self.function_code = function_code
        self.exception_code = exception_code
        super().__init__(
            bus, unit_id, f"function {function_code:#04x} answered exception {exception_code:02d}"
        )


class DeviceUnavailable(BusError):
    """The device's circuit breaker is open: the request was not sent."""


class TransportClosed(BusError):
    """The port or connection is closed (or could not be opened)."""


class InterlockError(GatewayError):
    """An interlock command was refused (unknown name, not latched, fault still present)."""

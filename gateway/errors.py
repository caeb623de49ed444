"""The gateway's exception tree.

Every error a user can meet derives from :class:`GatewayError` and names the input, the
value and what was expected. Lower-level errors are translated into this tree where they
enter, at one place each: pymodbus and pyserial in the bus transports (:mod:`gateway.bus`),
aiomqtt/paho in :mod:`gateway.mqtt`, mpremote in :mod:`gateway.flash.board_link`, SQLite in
the outbox, pydantic in :mod:`gateway.validation`. Callers never catch a library's exception.

    GatewayError
    ├── ProfileError ── SunSpecError        a device profile, or a SunSpec model chain
    ├── CodecError                          a value that does not fit a point's registers
    ├── ConfigError                         a site config (every problem, each with its key)
    ├── ApplyError                          a site document that cannot be applied in place
    ├── BusError                            one Modbus transaction failed
    │   ├── BusTimeout, FrameError, ModbusExceptionResponse
    │   └── DeviceUnavailable, TransportClosed
    ├── PlanError                           a read no block can ever make
    ├── ResponseError                       a response PDU that does not answer its request
    ├── InterlockError                      an interlock command refused (reset-latch)
    ├── UplinkError, OutboxError            the [uplink] table; the durable outbox
    ├── WireError                           a payload outside the wire contract
    ├── BrokerError                         the MQTT broker refused or dropped us
    ├── FlashError                          ``gateway flash`` could not finish
    │   ├── PortError, NotMicroPython, LinkLost, BoardError
    │   └── BadInput, UnsupportedVersion, CopyInterrupted, VerificationFailed
    ├── FirmwareError, IdentityRejected     the firmware sources; a board identity
    ├── KeyFileError, SignatureError        a signing/trusted key file; a signature refused
    └── OtaError ── BundleRefused           an update that cannot proceed; a refused bundle
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error raised by the gateway."""


# -- device profiles and the site config -----------------------------------------------------


class ProfileError(GatewayError):
    """A device profile file is malformed or inconsistent."""


class SunSpecError(ProfileError):
    """No SunSpec model chain where one was expected, a broken chain, or a missing model."""


class CodecError(GatewayError):
    """A value cannot be encoded into (or decoded from) a point's registers."""


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


class ApplyError(GatewayError):
    """A site document that cannot be applied to the running gateway in place (its identity,
    its uplink or its control period changed, or a port would not open); ``problems`` holds
    one line per problem, each starting with its key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


# -- buses -----------------------------------------------------------------------------------


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


class PlanError(GatewayError, ValueError):
    """A span that no block can ever read (inside an unreadable range, or too long)."""


class ResponseError(GatewayError):
    """A response PDU that does not answer the request (wrong function, length, garbage)."""


# -- control ---------------------------------------------------------------------------------


class InterlockError(GatewayError):
    """An interlock command was refused (unknown name, not latched, fault still present)."""


# -- uplink ----------------------------------------------------------------------------------


class UplinkError(GatewayError):
    """The uplink cannot start: a credentials or certificate file named in the config."""


class OutboxError(GatewayError):
    """The outbox file cannot be opened or written; the message names the file."""


class WireError(GatewayError):
    """A payload or topic that does not follow the contract; the message says what and where."""


class BrokerError(GatewayError):
    """The MQTT broker refused or dropped the connection (aiomqtt/paho errors, translated in
    :mod:`gateway.mqtt`); ``refused_credentials`` says whether it refused who we are."""

    def __init__(self, message: str, *, refused_credentials: bool = False) -> None:
        self.refused_credentials = refused_credentials
        super().__init__(message)


# -- flashing the SIO-1 ----------------------------------------------------------------------


class FlashError(GatewayError):
    """``gateway flash`` could not finish; the message says what happened and what to do."""


class PortError(FlashError):
    """The serial port could not be opened (missing, busy, no permission)."""


class NotMicroPython(FlashError):
    """Something answers on the port, but it is not a MicroPython REPL."""


class LinkLost(FlashError):
    """The board stopped answering in the middle of a session (unplugged, reset)."""


class BoardError(FlashError):
    """A command raised an error on the board (flash full, file system error)."""


class BadInput(FlashError):
    """The command line needs the technician's input."""


class IdentityMissing(FlashError):
    """The board needs an identity file and the identity flags are not all given: a failure
    like any other for ``gateway flash`` (exit 1, as the README promises)."""


class UnsupportedVersion(FlashError):
    """The board runs a MicroPython older than :data:`SUPPORTED`."""


class CopyInterrupted(FlashError):
    """The board went away while files were copied or renamed."""


class VerificationFailed(FlashError):
    """A file's hash on the board, or the SIO-1's Modbus answer, is not what was installed."""


class FirmwareError(GatewayError):
    """The firmware sources are missing, incomplete or do not compile."""


class IdentityRejected(GatewayError):
    """The identity given for a board is not one the firmware accepts."""


# -- signed releases and updates (gateway.trust, gateway.ota) --------------------------------


class KeyFileError(GatewayError):
    """A key file is missing, unreadable or not an Ed25519 key; the message names the file."""


class SignatureError(GatewayError):
    """A signed document was refused: unsigned, signed by a key not trusted here, or a
    signature that does not match the document. ``reason`` is one of ``unsigned``,
    ``unknown-key``, ``bad-signature``."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class OtaError(GatewayError):
    """An update cannot proceed (download, disk space, install, switch); says why."""


class BundleRefused(OtaError):
    """A release bundle that will not be installed: tampered, unsigned, another platform,
    a path outside the bundle, a downgrade. ``reason`` is a short code, the message the
    sentence a person reads."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)

"""A bus scan: which unit ids answer on a line or a Modbus TCP gateway, and what they are.

Each unit id gets one probe read (holding register 0): any answer, data or a Modbus exception,
means a device is there; silence for the probe timeout means none, and so do the exceptions a
TCP-to-RTU gateway answers for a unit behind it that is silent (0x0A, 0x0B). An answering
unit is then asked what it is, by every way a device can say so:

* Modbus device identification (FC43/MEI 14, basic objects: vendor, product code, revision);
* the SunSpec ``SunS`` marker at 40000, 0 or 50000, and the common model's manufacturer,
  model and serial number, and which SunSpec models it carries;
* the identity registers profiles declare (``identity = { meter_code = 0x0070 }``), confirmed
  by the unit answering where the profile's map begins and ends in every table it uses.

The scan only reads (FC01-FC04, FC43): it never writes to a device. It goes through the same
transports as the gateway, so an RTU scan keeps t3.5 between frames, and each unit id is
bounded in time: ``probe_timeout_s`` for a silent one, ``budget_s`` for an answering one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from pymodbus.exceptions import ModbusException
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.mei_message import ReadDeviceInformationResponse

from gateway.bus.pdu import ExceptionAnswer, Read, decode_response, encode_request
from gateway.bus.transport import Transport
from gateway.devices import codec, sunspec
from gateway.devices.profile import Point, Profile, Table
from gateway.errors import (
    BusError,
    BusTimeout,
    DeviceUnavailable,
    FrameError,
    ModbusExceptionResponse,
    ResponseError,
    SunSpecError,
)

#: FC43 / MEI type 14, read device id code 01 (basic), from object 0.
READ_DEVICE_ID = bytes([0x2B, 0x0E, 0x01, 0x00])
DEVICE_ID_OBJECTS = {0: "vendor", 1: "product_code", 2: "revision"}
#: 0x0A gateway path unavailable, 0x0B gateway target failed to respond: no device there
GATEWAY_EXCEPTIONS = (0x0A, 0x0B)
_DECODER = DecodePDU(is_server=False)


@dataclass
class Found:
    """One unit id that answered, and what it says it is."""

    unit_id: int
    #: what the probe got: "registers" or "exception NN"
    answered: str
    elapsed_s: float = 0.0
    identification: dict[str, str] = field(default_factory=dict)  # FC43
    sunspec: dict[str, str] = field(default_factory=dict)  # model 1: mn, md, sn
    sunspec_models: list[int] = field(default_factory=list)
    #: profiles that match: their identity registers read as declared, or their SunSpec models
    profiles: list[str] = field(default_factory=list)
    #: what could not be asked in time (the budget ran out)
    incomplete: bool = False

    def says(self) -> str:
        """What the device says it is, in one line."""
        parts = []
        if self.identification:
            parts.append(" ".join(self.identification.values()))
        if self.sunspec:
            parts.append("SunSpec " + " ".join(v for v in self.sunspec.values() if v))
        if not parts and self.profiles:
            return "recognised by its identity registers"
        return "; ".join(parts) or "does not say what it is"


@dataclass(frozen=True)
class ScanSettings:
    units: tuple[int, ...] = tuple(range(1, 248))
    #: how long a silent unit id is waited for
    probe_timeout_s: float = 0.3
    #: how long an answering unit is asked what it is, at most
    budget_s: float = 3.0


class Scanner:
    """Scans one transport; ``progress(unit_id, found_or_None)`` is called after each id."""

    def __init__(
        self,
        transport: Transport,
        profiles: Mapping[str, Profile],
        settings: ScanSettings = ScanSettings(),
        progress: Callable[[int, Found | None], None] | None = None,
    ) -> None:
        self.transport = transport
        self.profiles = profiles
        self.settings = settings
        self.progress = progress or (lambda unit, found: None)
        self.requests: list[tuple[int, int]] = []  # (unit id, function code) of every request

    async def scan(self) -> list[Found]:
        """Probe every unit id in turn. A transport that cannot reach the line or the host
        at all (:class:`~gateway.errors.TransportClosed`) ends the scan with that error."""
        found = []
        for unit in self.settings.units:
            result = await self.probe(unit)
            self.progress(unit, result)
            if result is not None:
                found.append(result)
        return found

    async def probe(self, unit: int) -> Found | None:
        started = time.monotonic()
        try:
            answer = await self._read(
                unit, Read(Table.HOLDING, 0, 1), self.settings.probe_timeout_s
            )
        except (BusTimeout, DeviceUnavailable):
            return None
        except FrameError as exc:
            # something answered, but not in frames this line's settings can read
            found = Found(unit, f"garbled frames ({exc}): check the baud rate and parity")
            found.elapsed_s = time.monotonic() - started
            return found
        if isinstance(answer, ExceptionAnswer) and answer.exception_code in GATEWAY_EXCEPTIONS:
            return None  # a TCP-to-RTU gateway saying nothing answered behind it
        what = (
            f"exception {answer.exception_code:02d}"
            if isinstance(answer, ExceptionAnswer)
            else "registers"
        )
        found = Found(unit, what)
        try:
            async with asyncio.timeout(self.settings.budget_s):
                await self._identify(found)
        except TimeoutError:
            found.incomplete = True
        found.elapsed_s = time.monotonic() - started
        return found

    # -- what the unit says it is -----------------------------------------------------------

    async def _identify(self, found: Found) -> None:
        found.identification = await self._device_identification(found.unit_id)
        await self._sunspec(found)
        chain = set(found.sunspec_models)
        for name, profile in self.profiles.items():
            by_chain = profile.sunspec is not None and chain >= set(profile.sunspec.models)
            if by_chain or (
                profile.identity and await self._identity_matches(found.unit_id, profile)
            ):
                found.profiles.append(name)

    async def _device_identification(self, unit: int) -> dict[str, str]:
        self.requests.append((unit, READ_DEVICE_ID[0]))
        try:
            data = await self.transport.transact(unit, READ_DEVICE_ID, self._timeout())
        except BusError:
            return {}
        if not data or data[0] != READ_DEVICE_ID[0]:
            return {}  # an exception: the device does not implement it
        try:
            pdu = _DECODER.decode(data)
        except (ModbusException, IndexError, ValueError, KeyError):
            return {}
        if not isinstance(pdu, ReadDeviceInformationResponse):
            return {}
        return {
            DEVICE_ID_OBJECTS[k]: _text(v)
            for k, v in sorted(pdu.information.items())
            if k in DEVICE_ID_OBJECTS and isinstance(v, bytes)
        }

    async def _sunspec(self, found: Found) -> None:
        unit = found.unit_id

        async def read(address: int, count: int) -> list[int]:
            answer = await self._read(unit, Read(Table.HOLDING, address, count), self._timeout())
            if isinstance(answer, ExceptionAnswer):
                raise ModbusExceptionResponse("scan", unit, 3, answer.exception_code)
            return answer

        try:
            starts = await sunspec.discover(read)
        except (SunSpecError, BusError):
            return
        found.sunspec_models = sorted(starts)
        if 1 not in starts:
            return
        for name, offset in (("mn", 2), ("md", 18), ("sn", 50)):
            try:
                regs = await read(starts[1] + offset, 16)
            except BusError:
                continue
            found.sunspec[name] = _text(b"".join(r.to_bytes(2, "big") for r in regs))

    async def _identity_matches(self, unit: int, profile: Profile) -> bool:
        for name, expected in profile.identity.items():
            point = profile.point(name)
            if point.address is None:
                return False
            try:
                answer = await self._read(
                    unit, Read(point.table, point.address, point.width), self._timeout()
                )
            except BusError:
                return False
            if isinstance(answer, ExceptionAnswer) or codec.decode_raw(point, answer) != expected:
                return False
        return await self._shape_matches(unit, profile)

    async def _shape_matches(self, unit: int, profile: Profile) -> bool:
        """The unit answers where the profile's map has points: the first and the last
        readable point of every table it uses. Devices of one maker often share a version
        register (our elevator, locker and SIO-1 maps all read 0x0100 at input 0); their
        tables do not end at the same address."""
        ends: dict[Table, list[Point]] = {}
        for p in profile.points:
            if p.readable and p.address is not None:
                ends.setdefault(p.table, []).append(p)
        for points in ends.values():
            ordered = sorted(points, key=lambda p: p.address or 0)
            for p in {ordered[0].name: ordered[0], ordered[-1].name: ordered[-1]}.values():
                assert p.address is not None
                try:
                    answer = await self._read(
                        unit, Read(p.table, p.address, p.width), self._timeout()
                    )
                except BusError:
                    return False
                if isinstance(answer, ExceptionAnswer):
                    return False
        return True

    async def _read(self, unit: int, request: Read, wait_s: float) -> list[int] | ExceptionAnswer:
        self.requests.append((unit, request.function_code))
        data = await self.transport.transact(unit, encode_request(request), wait_s)
        try:
            return decode_response(request, data)
        except ResponseError:
            return ExceptionAnswer(request.function_code, 0)

    def _timeout(self) -> float:
        return max(self.settings.probe_timeout_s, 0.2)


def _text(data: bytes) -> str:
    return data.split(b"\x00", 1)[0].decode("ascii", errors="replace").strip()


def devices_block(found: Iterable[Found], bus: str, kinds: Mapping[str, str]) -> str:
    """A ``[[devices]]`` table for each recognised unit, ready for a site config.

    ``kinds`` maps a profile's model to its kind (names are ``KIND-UNIT``); a unit that more
    than one profile matches gets the first, with the others named in a comment."""
    out = []
    for f in found:
        if not f.profiles:
            continue
        model, *others = f.profiles
        name = f"{kinds.get(model, 'device').replace('_', '-')}-{f.unit_id}"
        out += [
            f"# unit {f.unit_id}: {f.says()}"
            + (f" (also matches {', '.join(others)})" if others else ""),
            "[[devices]]",
            f'name = "{name}"',
            f'profile = "{model}"',
            f'bus = "{bus}"',
            f"unit_id = {f.unit_id}",
            "",
        ]
    return "\n".join(out)

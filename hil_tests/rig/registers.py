"""Register storage of a simulated device, built from its gateway profile.

This is the contract between the rig's servers (which speak Modbus on a line model or TCP) and
the device models (which move elevators, charge cars, follow the sun). A server calls
:meth:`SimulatedUnit.read` / :meth:`SimulatedUnit.write`; a device model owns a
:class:`RegisterMap` and reacts to writes in :meth:`SimulatedUnit.on_write`.

A request that touches an address the device does not implement (outside every table's
readable span, or inside an unreadable range of the profile or one injected at run time) is
answered with exception 02, as the real devices do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from gateway.devices import codec
from gateway.devices.profile import Point, Profile, Range, Table


class ExceptionCode(IntEnum):
    ILLEGAL_FUNCTION = 1
    ILLEGAL_DATA_ADDRESS = 2
    ILLEGAL_DATA_VALUE = 3
    DEVICE_FAILURE = 4


class SimModbusError(Exception):
    """Raised by a simulated unit to answer a request with a Modbus exception."""

    def __init__(self, code: ExceptionCode, reason: str = "") -> None:
        self.code = code
        super().__init__(f"exception {int(code):02d} {code.name}: {reason}")


@dataclass
class RegisterMap:
    """The four tables of one unit, with readable spans and unreadable ranges.

    ``spans[table]`` is the inclusive (first, last) address range the device answers for;
    addresses inside a span that no point defines read as 0 (reserved), except inside an
    ``unreadable`` range, which answers exception 02.
    """

    spans: dict[Table, tuple[int, int]]
    unreadable: list[Range] = field(default_factory=list)
    values: dict[Table, dict[int, int]] = field(default_factory=dict)

    @classmethod
    def from_points(cls, points: Iterable[Point], unreadable: Sequence[Range] = ()) -> RegisterMap:
        """Spans cover every point's addresses (points must carry absolute addresses)."""
        spans: dict[Table, tuple[int, int]] = {}
        for p in points:
            assert p.address is not None, f"{p.name}: resolve SunSpec offsets first"
            lo, hi = p.address, p.address + p.width - 1
            if p.table in spans:
                lo, hi = min(lo, spans[p.table][0]), max(hi, spans[p.table][1])
            spans[p.table] = (lo, hi)
        return cls(spans=spans, unreadable=list(unreadable))

    def check(self, table: Table, address: int, count: int) -> None:
        """Raise exception 02 unless every address in the request is readable."""
        span = self.spans.get(table)
        if span is None or address < span[0] or address + count - 1 > span[1]:
            raise SimModbusError(
                ExceptionCode.ILLEGAL_DATA_ADDRESS, f"{table} {address}+{count} outside {span}"
            )
        for r in self.unreadable:
            if r.table is table and r.overlaps(address, count):
                raise SimModbusError(
                    ExceptionCode.ILLEGAL_DATA_ADDRESS, f"{table} {address}+{count} unreadable"
                )

    def get(self, table: Table, address: int, count: int) -> list[int]:
        tab = self.values.get(table, {})
        return [tab.get(a, 0) for a in range(address, address + count)]

    def put(self, table: Table, address: int, values: Sequence[int]) -> None:
        tab = self.values.setdefault(table, {})
        for i, v in enumerate(values):
            tab[address + i] = v


class SimulatedUnit:
    """One Modbus unit of the rig: a register map plus a profile to encode values with.

    Device models subclass this, keep ``regs`` current (``set``), and override
    :meth:`on_write` to react to commands. Servers only call :meth:`read` and :meth:`write`.
    """

    def __init__(self, profile: Profile, regs: RegisterMap, unit_id: int) -> None:
        self.profile = profile
        self.regs = regs
        self.unit_id = unit_id
        self._points = {p.name: p for p in profile.points}
        self._placed: dict[str, Point] = {}
        #: FC43 basic device identification (object id -> bytes); empty: answers exception 01
        self.device_identification: dict[int, bytes] = {}

    # -- values, by point name, in engineering units ---------------------------------------

    def point(self, name: str) -> Point:
        """The point with its absolute address (SunSpec devices override :meth:`place`)."""
        if name not in self._placed:
            self._placed[name] = self.place(self._points[name])
        return self._placed[name]

    def place(self, point: Point) -> Point:
        return point

    def set(self, name: str, value: codec.Value, scale_factor: int | None = None) -> None:
        p = self.point(name)
        assert p.address is not None
        self.regs.put(p.table, p.address, codec.encode(p, value, scale_factor))

    def get(self, name: str, scale_factor: int | None = None) -> codec.Value:
        p = self.point(name)
        assert p.address is not None
        return codec.decode(p, self.regs.get(p.table, p.address, p.width), scale_factor)

    # -- the server-facing interface --------------------------------------------------------

    def read(self, table: Table, address: int, count: int) -> list[int]:
        """Registers (or 0/1 bits) for a read request; raises :class:`SimModbusError`."""
        self.regs.check(table, address, count)
        return self.regs.get(table, address, count)

    def write(self, table: Table, address: int, values: Sequence[int]) -> None:
        """Apply a write request; raises :class:`SimModbusError` (e.g. 02, 03, 04)."""
        if table not in (Table.HOLDING, Table.COIL):
            raise SimModbusError(ExceptionCode.ILLEGAL_FUNCTION, f"{table} is read-only")
        self.regs.check(table, address, len(values))
        self.on_write(table, address, values)

    def on_write(self, table: Table, address: int, values: Sequence[int]) -> None:
        """Default: store the values. Device models override to validate and react."""
        self.regs.put(table, address, values)

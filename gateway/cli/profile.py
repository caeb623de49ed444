"""``gateway profile check FILE``: is a profile right, and does the device agree?

Without a device it checks the file as the gateway will load it (types, overlapping
registers, scale factors, enum labels, the watchdog trio, roles) and lists what the
interlocks can do with it. With ``--port`` or ``--host`` it reads every readable point once
from a real device and prints the raw registers beside the decoded value, so a technician
sees at once whether the map is right (a voltage of 23000 V is a scale off by 100). It only
reads: a commissioning tool must not move a charger.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from rich.console import Console
from rich.table import Table as RichTable

from gateway.bus.config import STANDARD_BAUDRATES, RtuBus, TcpBus
from gateway.bus.pdu import ExceptionAnswer, Read, decode_response, encode_request
from gateway.bus.transport import Transport
from gateway.cli.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from gateway.devices import codec, sunspec
from gateway.devices.library import read_profile_file
from gateway.devices.profile import Point, Profile, Table
from gateway.devices.roles import SPECS, Role
from gateway.errors import (
    BusError,
    BusTimeout,
    GatewayError,
    ModbusExceptionResponse,
    ProfileError,
)
from gateway.runtime import open_transport

READ_TIMEOUT_S = 1.0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("profile", help="check a device profile file (and a device against it)")
    actions = p.add_subparsers(dest="profile_command", required=True)
    check = actions.add_parser(
        "check",
        help="validate a profile; with --port/--host read every point from a device",
        description="Validate one profile file strictly (the same checks as the gateway's). "
        "With --port (RS-485) or --host (Modbus TCP), read every readable point of the "
        "device once and print the raw registers beside the decoded value. Reads only.",
    )
    check.add_argument("file", type=Path, help="the profile (TOML)")
    where = check.add_mutually_exclusive_group()
    where.add_argument("--port", help="serial port of the device's RS-485 line")
    where.add_argument("--host", help="the device's Modbus TCP address")
    check.add_argument("--baud", type=int, default=9600, help="line speed (default %(default)s)")
    check.add_argument("--parity", choices=("N", "E", "O"), default="N")
    check.add_argument("--tcp-port", type=int, default=502)
    check.add_argument("--unit", type=int, default=1, help="unit id (default %(default)s)")


def run(args: argparse.Namespace, console: Console) -> int:
    try:
        profile = read_profile_file(args.file)
    except ProfileError as exc:
        console.print(f"✗ {exc}", style="red", markup=False, highlight=False)
        return EXIT_BAD_INPUT
    _summary(profile, args.file, console)
    if not (args.port or args.host):
        return EXIT_OK
    if args.port and args.baud not in STANDARD_BAUDRATES:
        console.print(f"✗ --baud: {args.baud} is not a standard rate", style="red")
        return EXIT_BAD_INPUT
    if not 0 <= args.unit <= 255:
        console.print(f"✗ --unit: {args.unit} is outside 0..255", style="red")
        return EXIT_BAD_INPUT
    bus: RtuBus | TcpBus = (
        RtuBus(name="check", kind="rtu", port=args.port, baudrate=args.baud, parity=args.parity)
        if args.port
        else TcpBus(name="check", kind="tcp", host=args.host, port=args.tcp_port)
    )
    try:
        rows, failed = asyncio.run(_read_all(bus, args.unit, profile))
    except GatewayError as exc:
        console.print(f"✗ {exc}", style="red", markup=False, highlight=False)
        return EXIT_FAILED
    table = RichTable("point", "table", "address", "registers", "value", "unit")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if failed:
        console.print(
            f"✗ {failed} point(s) could not be read: the map or the unit id is wrong",
            style="red",
            highlight=False,
        )
        return EXIT_FAILED
    console.print(f"✓ read {len(rows)} point(s) from unit {args.unit}", style="green")
    return EXIT_OK


def _summary(profile: Profile, path: Path, console: Console) -> None:
    readable = sum(1 for p in profile.points if p.readable)
    console.print(
        f"✓ {path}: {profile.model} ({profile.kind.value}), {len(profile.points)} points "
        f"({readable} readable), {len(profile.commands)} command(s), "
        + ("a watchdog" if profile.watchdog else "no watchdog"),
        style="green",
        highlight=False,
    )
    if profile.source:
        console.print(f"  source: {profile.source}", markup=False, highlight=False)
    missing = [r for r in Role if SPECS[r].kind == profile.kind.value and r not in profile.roles]
    if profile.roles:
        console.print(f"  roles: {', '.join(sorted(profile.roles))}", highlight=False)
    if missing:
        console.print(
            f"  not bound (docs/profiles.md, Roles: which interlocks need which): "
            f"{', '.join(sorted(missing))}",
            style="yellow",
            highlight=False,
        )


async def _read_all(
    bus: RtuBus | TcpBus, unit: int, profile: Profile
) -> tuple[list[tuple[str, ...]], int]:
    try:
        async with open_transport(bus) as transport:
            return await _read_points(transport, unit, profile)
    except BusError as exc:
        raise GatewayError(f"cannot reach unit {unit} on {bus.name}: {exc}") from None


async def _read_points(
    transport: Transport, unit: int, profile: Profile
) -> tuple[list[tuple[str, ...]], int]:
    async def read(table: Table, address: int, count: int) -> list[int]:
        request = Read(table, address, count)
        answer = decode_response(
            request, await transport.transact(unit, encode_request(request), READ_TIMEOUT_S)
        )
        if isinstance(answer, ExceptionAnswer):
            raise ModbusExceptionResponse(
                "check", unit, answer.function_code, answer.exception_code
            )
        return answer

    if profile.sunspec is not None:
        starts = await sunspec.discover(
            lambda a, n: read(Table.HOLDING, a, n), profile.sunspec.base_addresses
        )
        profile = sunspec.place(profile, starts)
    raw: dict[str, list[int] | None] = {}
    for p in profile.points:
        if not p.readable or p.address is None:
            continue
        try:
            raw[p.name] = await read(p.table, p.address, p.width)
        except BusTimeout:
            if not any(raw.values()):  # silent from the start: not a map problem
                raise GatewayError(
                    f"unit {unit} does not answer (no response within {READ_TIMEOUT_S:g} s): "
                    "check the unit id, the wiring and the line settings"
                ) from None
            raw[p.name] = None
        except (ModbusExceptionResponse, BusError):
            raw[p.name] = None
    rows: list[tuple[str, ...]] = []
    failed = 0
    points = profile.point_map
    for name, regs in raw.items():
        p = points[name]
        if regs is None:
            failed += 1
            rows.append((name, p.table.value, str(p.address), "no answer", "–", p.unit or ""))
            continue
        rows.append(
            (
                name,
                p.table.value,
                str(p.address),
                _hex(regs),
                _value(p, regs, raw, points),
                p.unit or "",
            )
        )
    return rows, failed


def _hex(regs: list[int]) -> str:
    return " ".join(f"{r:04X}" for r in regs)


def _value(
    p: Point, regs: list[int], raw: dict[str, list[int] | None], points: dict[str, Point]
) -> str:
    sf = None
    if p.scale_factor is not None:
        sf_regs = raw.get(p.scale_factor)
        sf_value = codec.decode(points[p.scale_factor], sf_regs) if sf_regs else None
        sf = sf_value if isinstance(sf_value, int) else None
    try:
        value = codec.decode(p, regs, sf)
    except GatewayError as exc:
        return f"✗ {exc}"
    if p.enum and isinstance(value, int):
        return f"{value} ({p.enum.get(value, 'not a known value')})"
    if p.bits and isinstance(value, int):
        set_bits = [n for b, n in p.bits.items() if value >> b & 1]
        return f"{value:#x} ({', '.join(set_bits) or 'none set'})"
    return "not implemented" if value is None else str(value)

"""The full-screen status display of ``gateway run``: a layout of a :class:`StatusSnapshot`.

From the top: a header line (site, time, devices by health, control loop); the device table,
each device coloured by its health with its data quality in a column of its own; the bus
table; the alarm area, fixed at the bottom whatever the number of devices, most severe first;
the latest log message. Everything is fitted to the console when drawn: columns that do not
fit the width are dropped in the order of :data:`DEVICE_DROP_ORDER` and
:data:`BUS_DROP_ORDER`; when the screen is too short the bus table goes first.

The screen is drawn by a process of its own, ``python -m gateway.cli.screen``, which reads
snapshots from its stdin (:func:`frame`) and owns the terminal: laying out and writing a frame
takes ~10 ms of CPU, and in the gateway's process that time would be taken from the control
loop (the GIL, and the garbage collector woken by rich's many small objects). It draws until
its stdin closes, and ignores Ctrl-C, which the gateway handles.
"""

from __future__ import annotations

import collections
import pickle
import select
import signal
import struct
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import BinaryIO

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.layout import Layout
from rich.live import Live
from rich.padding import Padding
from rich.table import Table as RichTable
from rich.text import Text

from gateway.cli.snapshot import BusStatus, DeviceStatus, Health, StatusSnapshot
from gateway.control.alarms import AlarmEvent, Severity
from gateway.image import Quality
from gateway.priority import demote_current_thread

#: Device-table columns dropped, first to last, until the table fits the terminal: first the
#: detail of bus timing, then the device's address, then the bus counters, last the bus.
#: ``device``, ``health``, ``data`` and ``key points`` always stay; key points take the
#: width left over (at least :data:`KEY_POINTS_MIN`) and end in "…" when cut.
DEVICE_DROP_ORDER: tuple[str, ...] = ("crc", "p50 ms", "tx", "unit", "p99 ms", "timeouts", "bus")
KEY_POINTS_MIN = 30
#: Bus-table columns dropped, first to last, until it fits; ``bus`` and ``utilisation`` stay.
BUS_DROP_ORDER: tuple[str, ...] = ("crc", "p50 ms", "retries", "tx/s", "p99 ms", "timeouts")
#: Lines of the alarm area: its title and up to five alarms (or four and "… N more").
ALARM_LINES = 6


HEALTH_STYLE = {
    Health.OFFLINE: "bold red",
    Health.FAULT: "bold red",
    Health.WARNING: "yellow",
    Health.HELD: "yellow",
    Health.STARTING: "cyan",
    Health.OK: "green",
}
QUALITY_STYLE = {
    Quality.GOOD: "green",
    Quality.STALE: "yellow",
    Quality.BAD: "red",
    Quality.OFFLINE: "bright_black",
}
SEVERITY_STYLE = {"critical": "bold red", "major": "red", "minor": "yellow", "info": "cyan"}


Row = dict[str, Text | str]
_LEFT = {"bus", "health", "data", "key points"}  # and the first column; the rest are numbers


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _device_row(d: DeviceStatus, key_points: Text) -> Row:
    return {
        "device": Text(d.name, style=HEALTH_STYLE[d.health]),
        "bus": d.bus,
        "unit": str(d.unit),
        "health": Text(d.health.value, style=HEALTH_STYLE[d.health]),
        "data": Text(d.data, style=QUALITY_STYLE[d.data_quality]),
        "key points": key_points,
        "tx": str(d.tx),
        "p50 ms": _num(d.p50_ms),
        "p99 ms": _num(d.p99_ms),
        "timeouts": str(d.timeouts),
        "crc": str(d.crc),
    }


def _key_points(d: DeviceStatus) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    for kp in d.key_points:
        if text:
            text.append("  ")
        text.append(f"{kp.label}=", style="dim")
        text.append(kp.text, style=QUALITY_STYLE[kp.quality])
    return text


def _bus_row(b: BusStatus) -> Row:
    return {
        "bus": b.name,
        "tx/s": f"{b.tx_per_s:.1f}",
        "utilisation": f"{b.utilisation:.0%}",
        "p50 ms": _num(b.p50_ms),
        "p99 ms": _num(b.p99_ms),
        "timeouts": str(b.timeouts),
        "crc": str(b.crc),
        "retries": str(b.retries),
    }


def _table(columns: Sequence[str], rows: Sequence[Row], widths: dict[str, int]) -> RichTable:
    table = RichTable(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False)
    for i, name in enumerate(columns):
        table.add_column(
            name,
            justify="left" if i == 0 or name in _LEFT else "right",
            no_wrap=True,
            overflow="ellipsis",
            width=widths.get(name),
        )
    for row in rows:
        table.add_row(*(row[c] for c in columns))
    return table


def fit(
    width: int,
    columns: Sequence[str],
    rows: Sequence[Row],
    drop_order: Sequence[str],
    flexible: tuple[str, int] | None = None,
) -> tuple[RichTable, tuple[str, ...]]:
    """The table of ``columns`` without the fewest of ``drop_order`` (dropped first to last)
    that fits ``width``, and the columns dropped. A ``flexible`` (column, minimum width)
    takes the width left over. Every column gets a fixed width, its widest cell's, so that
    rich need not measure the cells again (measuring is most of the cost of a frame)."""
    natural = {c: max([cell_len(c), *(_cell_len(row[c]) for row in rows)]) for c in columns}
    widths = dict(natural)
    if flexible:
        widths[flexible[0]] = flexible[1]
    for n in range(len(drop_order) + 1):
        kept = [c for c in columns if c not in drop_order[:n]]
        need = sum(widths[c] for c in kept) + _GAP * (len(kept) - 1)
        if need <= width:
            break
    if flexible:
        column, least = flexible
        widths[column] = max(1, min(natural[column], least + width - need))
    return _table(kept, rows, widths), tuple(drop_order[:n])


#: Cells between two columns: the padding either side of the (blank) rule of box.SIMPLE_HEAD.
_GAP = 3


def _cell_len(cell: Text | str) -> int:
    return cell.cell_len if isinstance(cell, Text) else cell_len(cell)


DEVICE_COLUMNS = (
    *("device", "bus", "unit", "health", "data", "key points"),
    *("tx", "p50 ms", "p99 ms", "timeouts", "crc"),
)
BUS_COLUMNS = ("bus", "tx/s", "utilisation", "p50 ms", "p99 ms", "timeouts", "crc", "retries")


def device_table(snap: StatusSnapshot, width: int) -> tuple[RichTable, tuple[str, ...]]:
    """Every device, one line each, fitted to ``width``; and the columns dropped."""
    rows = [_device_row(d, _key_points(d)) for d in snap.devices]
    flexible = ("key points", KEY_POINTS_MIN)
    return fit(width, DEVICE_COLUMNS, rows, DEVICE_DROP_ORDER, flexible)


def bus_table(snap: StatusSnapshot, width: int) -> tuple[RichTable, tuple[str, ...]]:
    """Every bus, one line each, fitted to ``width``; and the columns dropped."""
    return fit(width, BUS_COLUMNS, [_bus_row(b) for b in snap.buses], BUS_DROP_ORDER)


def header_line(snap: StatusSnapshot) -> Text:
    """Site, time, devices by health, control loop: one line."""
    counts = collections.Counter(d.health for d in snap.devices)
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(snap.title, style="bold")
    text.append(f"  {datetime.fromtimestamp(snap.at):%H:%M:%S}  ")
    for h in Health:
        if counts[h]:
            text.append(f"{counts[h]} {h.value}", style=HEALTH_STYLE[h])
            text.append("  ")
    text.append(snap.loop, style="" if snap.loop_healthy else "bold red")
    return text


def alarm_area(snap: StatusSnapshot, lines: int = ALARM_LINES) -> Group:
    """The active alarms, most severe first, in ``lines`` lines (title included)."""
    if not snap.alarms:
        return Group(Text("no active alarms", style="green"))
    by = collections.Counter(a.severity.value for a in snap.alarms)
    summary = ", ".join(f"{by[s.value]} {s.value}" for s in Severity if by[s.value])
    table = RichTable.grid(padding=(0, 1), expand=True)
    for _ in range(3):
        table.add_column(no_wrap=True)
    table.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
    room = lines - 1
    shown = snap.alarms if len(snap.alarms) <= room else snap.alarms[: room - 1]
    for a in shown:
        table.add_row(*_alarm_cells(a, snap.suppressed.get(a.key, 0)))
    if len(shown) < len(snap.alarms):
        more = len(snap.alarms) - len(shown)
        table.add_row("", "", "", Text(f"… {more} more: gateway alarms", style="dim"))
    return Group(Text(f"active alarms: {summary}", style="bold"), table)


def _alarm_cells(a: AlarmEvent, suppressed: int) -> tuple[str, Text, str, str]:
    message = a.message
    if a.count > 1:
        message += f" (×{a.count})"
    if suppressed:
        message += f" (+{suppressed} suppressed)"
    return (
        f"{datetime.fromtimestamp(a.at):%H:%M:%S}",
        Text(a.severity.value, style=SEVERITY_STYLE[a.severity.value]),
        a.device or "",
        message,
    )


class StatusScreen:
    """The full-screen layout of a snapshot, fitted to the console when it is drawn: the
    alarm area and the log line keep their place at the bottom; when the screen is too short
    the bus table goes first, then the device table is cut."""

    def __init__(self, snap: StatusSnapshot) -> None:
        self.snap = snap

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width, height = options.max_width, options.height or console.height
        devices, _ = device_table(self.snap, width)
        buses, _ = bus_table(self.snap, width)
        room = height - 1 - ALARM_LINES - 1  # below the header, above the alarms and log line
        device_lines = len(self.snap.devices) + 2  # its header and rule, a line per device
        bus_lines = len(self.snap.buses) + 3  # and a blank line above
        if device_lines + bus_lines > room:
            bus_lines = 0
        device_lines = max(1, min(device_lines, room - bus_lines))
        spare = room - device_lines - bus_lines
        note = Text(self.snap.note or "Ctrl-C stops the gateway", style="dim", no_wrap=True)
        note.overflow = "ellipsis"
        parts = [Layout(header_line(self.snap), size=1), Layout(devices, size=device_lines)]
        if bus_lines:
            parts.append(Layout(Padding(buses, (1, 0, 0, 0)), size=bus_lines))
        if spare > 0:
            parts.append(Layout(Text(" "), size=spare))  # keeps the alarms at the bottom
        parts += [Layout(alarm_area(self.snap), size=ALARM_LINES), Layout(note, size=1)]
        layout = Layout()
        layout.split_column(*parts)
        yield from layout.__rich_console__(console, options.update(height=height))


def alarm_table(events: Sequence[AlarmEvent], title: str = "active alarms") -> RichTable:
    """Alarms in full, for ``gateway alarms``."""
    table = RichTable(title=title, title_justify="left", expand=False)
    for column in ("time", "severity", "event", "interlock", "device", "message"):
        table.add_column(column)
    for e in events:
        when = datetime.fromtimestamp(e.at).strftime("%Y-%m-%d %H:%M:%S")
        message = e.message + (f" (by {e.by})" if e.by else "")
        table.add_row(
            when,
            Text(e.severity.value, style=SEVERITY_STYLE[e.severity.value]),
            e.kind,
            e.interlock,
            e.device or "",
            message,
        )
    return table


# -- the screen process -----------------------------------------------------------------------

_LENGTH = struct.Struct(">I")


def frame(snap: StatusSnapshot) -> bytes:
    """A snapshot as sent to the screen process: its length, then the pickle."""
    data = pickle.dumps(snap, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


def read_frames(stream: BinaryIO) -> Iterator[StatusSnapshot]:
    """The snapshots sent by :func:`frame`, until the stream ends; when several are waiting,
    only the newest (the screen shows the site now, not a backlog)."""
    while (data := _read_frame(stream)) is not None:
        while _waiting(stream) and (newer := _read_frame(stream)) is not None:
            data = newer
        yield pickle.loads(data)  # noqa: S301 - our own parent, through a pipe of its own


def _read_frame(stream: BinaryIO) -> bytes | None:
    head = _read_exactly(stream, _LENGTH.size)
    return None if head is None else _read_exactly(stream, _LENGTH.unpack(head)[0])


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _waiting(stream: BinaryIO) -> bool:
    """Whether more can be read from ``stream`` without waiting."""
    try:
        return bool(select.select([stream], [], [], 0)[0])
    except (OSError, ValueError):  # not a file (io.UnsupportedOperation is both)
        return False


def serve(snapshots: Iterable[StatusSnapshot], console: Console) -> None:
    """Draw each snapshot full-screen (the terminal's alternate screen) as it comes."""
    with Live(console=console, screen=True, auto_refresh=False) as live:
        for snap in snapshots:
            live.update(StatusScreen(snap), refresh=True)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the gateway stops, then closes our stdin
    demote_current_thread()  # drawing may wait; the gateway's control loop may not
    with open(sys.stdin.fileno(), "rb", buffering=0, closefd=False) as stdin:
        serve(read_frames(stdin), Console(force_terminal=True))


if __name__ == "__main__":
    main()

"""What ``gateway run`` shows of a running site: a full-screen status table, or log lines.

**Table or log.** On a terminal (stdout a TTY, ``TERM`` not ``dumb``) ``gateway run``
draws the full-screen status display; anywhere else — under systemd, whose stdout is the
journal, or with stdout redirected to a file or a pipe — it logs to stdout instead: one line
per device at start, every alarm as it is raised, updated or cleared, and a one-line summary
every ``--log-every`` seconds. ``--display table|log`` overrides the choice.
``INVOCATION_ID`` and ``JOURNAL_STREAM`` do not decide it, since a terminal emulator that runs
as a systemd user service passes them on to the shells in it; ``JOURNAL_STREAM`` only tells
whether stdout *is* the journal (its device and inode match), and then the log lines carry
journald priorities.

What is shown is a :class:`~gateway.cli.snapshot.StatusSnapshot` (devices by their health,
their data quality apart); the screen is :mod:`gateway.cli.screen`. While the screen is drawn
the log records are held: the latest is shown on its last line, and they are written out when
it closes.

**Off the control loop's path.** Twice a second :func:`~gateway.cli.snapshot.collect` copies
what is shown out of the gateway on the event loop (about 1 ms for the example site) and
sends it, pickled, to the screen process (:mod:`gateway.cli.screen`), which lays it out and
writes it to the terminal: a frame costs ~10 ms of CPU that, in this process, would be taken
from the control loop (the GIL, and garbage collections woken by rich's many small objects).
A frame is skipped while the screen process is behind. Log lines are written from a worker
thread, so a slow reader of stdout (the journal) never holds up the loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import IO, ClassVar

from rich.console import Console

from gateway.cli import screen
from gateway.cli.snapshot import Health, StatusSnapshot, collect
from gateway.control.alarms import AlarmEvent, Severity
from gateway.runtime import Gateway

log = logging.getLogger("gateway.status")

#: How often the screen is redrawn (2 Hz), and the log mode looks for new alarms.
REFRESH_S = 0.5


def inventory_lines(gw: Gateway) -> list[str]:
    """One line per device, said once at start."""
    return [
        f"{p.name}: {p.profile.model} on bus {p.device.bus}, unit {p.unit_id}"
        for p in gw.pollers.values()
    ]


def summary_line(snap: StatusSnapshot) -> str:
    """The state of the site in one line: devices by health (naming those not ok, and why),
    alarms, the control loop."""
    parts = []
    for health in Health:
        devices = [d for d in snap.devices if d.health is health]
        if devices and health is Health.OK:
            parts.append(f"{len(devices)} ok")
        elif devices:
            named = ", ".join(f"{d.name}: {d.why}" if d.why else d.name for d in devices)
            parts.append(f"{len(devices)} {health.value} ({named})")
    by = collections.Counter(a.severity.value for a in snap.alarms)
    alarms = ", ".join(f"{by[s.value]} {s.value}" for s in Severity if by[s.value]) or "none"
    return f"{len(snap.devices)} devices: {', '.join(parts)}; alarms: {alarms}; {snap.loop}"


_EVENT_LEVEL = {
    Severity.CRITICAL: logging.CRITICAL,
    Severity.MAJOR: logging.ERROR,
    Severity.MINOR: logging.WARNING,
    Severity.INFO: logging.INFO,
}


def alarm_line(e: AlarmEvent) -> tuple[int, str]:
    """An alarm event as a log level and line."""
    where = f" {e.device}" if e.device else ""
    line = f"alarm {e.kind}: {e.severity.value}{where}: {e.message} [{e.key}]"
    if e.count > 1:
        line += f" (×{e.count})"
    if e.by:
        line += f" (by {e.by})"
    if e.suppressed_by:
        line += f" (suppressed by {e.suppressed_by})"
    return (logging.INFO if e.kind == "cleared" else _EVENT_LEVEL[e.severity]), line


def on_journal(stream: IO[str]) -> bool:
    """Whether ``stream`` is systemd's journal (``JOURNAL_STREAM`` names its device:inode)."""
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return os.environ.get("JOURNAL_STREAM") == f"{st.st_dev}:{st.st_ino}"


def can_draw(console: Console) -> bool:
    """Whether the console is a terminal to draw the full-screen table on (see the module
    doc): stdout is a TTY and not a dumb one."""
    return console.is_terminal and not console.is_dumb_terminal


class _JournalFormatter(logging.Formatter):
    """A line with its syslog priority in front, which journald reads as the level."""

    PRIORITY: ClassVar[dict[str, int]] = {
        "CRITICAL": 2,
        "ERROR": 3,
        "WARNING": 4,
        "INFO": 6,
        "DEBUG": 7,
    }

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self.PRIORITY.get(record.levelname, 7)}>{record.getMessage()}"


@contextmanager
def _logging_to(stream: IO[str]) -> Iterator[None]:
    """Send the status log to ``stream`` (stdout) for the duration, at INFO and above."""
    handler = logging.StreamHandler(stream)
    if on_journal(stream):
        handler.setFormatter(_JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    saved = log.handlers[:], log.level, log.propagate
    log.handlers[:], log.propagate = [handler], False
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.handlers[:], level, log.propagate = saved
        log.setLevel(level)


class _HeldLogs(logging.Handler):
    """Keeps the log records while the screen hides the terminal: the latest is shown on
    the screen's last line, the last ``keep`` are written out when the screen closes."""

    def __init__(self, keep: int = 200) -> None:
        super().__init__()
        self.records: collections.deque[logging.LogRecord] = collections.deque(maxlen=keep)
        self.dropped = 0
        self.latest = ""

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) == self.records.maxlen:
            self.dropped += 1
        self.records.append(record)
        when = datetime.fromtimestamp(record.created)
        self.latest = f"{when:%H:%M:%S} {record.levelname} {record.name}: {record.getMessage()}"


@contextmanager
def _logs_held() -> Iterator[_HeldLogs]:
    root = logging.getLogger()
    held = _HeldLogs()
    saved = root.handlers[:]
    root.handlers[:] = [held]
    try:
        yield held
    finally:
        root.handlers[:] = saved
        if held.dropped:
            root.warning("(%d earlier log records were not kept)", held.dropped)
        for record in held.records:
            root.handle(record)


# -- running it -------------------------------------------------------------------------------


async def show(
    gw: Gateway,
    console: Console,
    *,
    draw: bool,
    until: float | None = None,
    log_every_s: float = 60.0,
) -> None:
    """Show the running gateway until ``until`` (monotonic) or cancelled: the full-screen
    table when ``draw``, else log lines on the console's stream."""
    if draw and await _draw(gw, until):
        return
    await _log(gw, console.file, until, log_every_s)


def _running(until: float | None) -> bool:
    return until is None or time.monotonic() < until


async def _draw(gw: Gateway, until: float | None) -> bool:
    """Feed the screen process a snapshot every :data:`REFRESH_S` (none while it is behind),
    the log held meanwhile; False if it ended before ``until`` (it could not draw)."""
    command = [sys.executable, "-m", "gateway.cli.screen"]
    with _logs_held() as held:
        proc = await asyncio.create_subprocess_exec(*command, stdin=asyncio.subprocess.PIPE)
        assert proc.stdin is not None
        try:
            while _running(until) and proc.returncode is None:
                if not proc.stdin.transport.get_write_buffer_size():  # it keeps up
                    proc.stdin.write(screen.frame(collect(gw, held.latest)))
                await asyncio.sleep(REFRESH_S)
        finally:
            proc.stdin.close()
            await _ended(proc)
    if _running(until):  # it ended on its own: the gateway goes on, and logs
        log.warning("the status screen ended (exit status %s); logging instead", proc.returncode)
        return False
    return True


async def _ended(proc: asyncio.subprocess.Process, within_s: float = 5.0) -> None:
    try:
        await asyncio.wait_for(proc.wait(), within_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def _log(gw: Gateway, stream: IO[str], until: float | None, every_s: float) -> None:
    events: collections.deque[AlarmEvent] = collections.deque()
    with _logging_to(stream), _listening(gw, events.append):
        await _emit([(logging.INFO, line) for line in inventory_lines(gw)])
        next_summary = time.monotonic() + every_s
        try:
            while _running(until):
                await asyncio.sleep(REFRESH_S)
                lines = [alarm_line(events.popleft()) for _ in range(len(events))]
                if time.monotonic() >= next_summary:
                    lines.append((logging.INFO, summary_line(collect(gw))))
                    next_summary += every_s
                await _emit(lines)
        finally:  # the last events and where the site stands, as the gateway stops
            _write_log([*map(alarm_line, events), (logging.INFO, summary_line(collect(gw)))])


@contextmanager
def _listening(gw: Gateway, listener: Callable[[AlarmEvent], None]) -> Iterator[None]:
    gw.alarms.listeners.append(listener)
    try:
        yield
    finally:
        gw.alarms.listeners.remove(listener)


async def _emit(lines: list[tuple[int, str]]) -> None:
    """Log in a worker thread: a slow reader of stdout (the journal) never stalls the loop."""
    if lines:
        await asyncio.to_thread(_write_log, lines)


def _write_log(lines: list[tuple[int, str]]) -> None:
    for level, line in lines:
        log.log(level, line)

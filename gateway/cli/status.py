"""The live status table of ``gateway run``: every device, its key points, its bus health."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime

from rich.console import Group, RenderableType
from rich.table import Table as RichTable
from rich.text import Text

from gateway.bus.breaker import BreakerState
from gateway.bus.poller import DevicePoller
from gateway.control.alarms import AlarmEvent
from gateway.devices.codec import Value
from gateway.devices.profile import Point, PointType
from gateway.image import Quality, Sample
from gateway.runtime import Gateway

_QUALITY_STYLE = {
    Quality.GOOD: "green",
    Quality.STALE: "yellow",
    Quality.BAD: "red",
    Quality.OFFLINE: "bright_black",
}


def format_value(point: Point, value: Value) -> str:
    """A value as a technician reads it: enum labels, set bit names, units."""
    if value is None:
        return "n/a"
    if point.type is PointType.ENUM and point.enum and isinstance(value, int):
        return point.enum.get(value, str(value))
    if point.type is PointType.BITFIELD and point.bits is not None and isinstance(value, int):
        names = [name for bit, name in sorted(point.bits.items()) if value >> bit & 1]
        return ",".join(names) or "-"
    text = f"{value:.1f}" if isinstance(value, float) else str(value)
    return f"{text} {point.unit}" if point.unit and point.unit != "floor" else text


def _device_state(poller: DevicePoller) -> Text:
    if not poller.ready:
        return Text("discovering", style="cyan")
    state = poller.breaker.state
    if state is BreakerState.CLOSED:
        return Text("online", style="green")
    if state is BreakerState.HALF_OPEN:
        return Text("probing", style="yellow")
    return Text("offline", style="red")


def _key_points(poller: DevicePoller, gw: Gateway) -> Text:
    text = Text()
    for name in poller.profile.key_points:
        sample: Sample = gw.image.get(poller.name, name) if poller.ready else _OFFLINE
        point = poller.profile.point(name)
        if text:
            text.append("  ")
        text.append(f"{name}=", style="dim")
        text.append(format_value(point, sample.value), style=_QUALITY_STYLE[sample.quality])
    return text


_OFFLINE = Sample(None, 0.0, Quality.OFFLINE)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def device_table(gw: Gateway) -> RichTable:
    table = RichTable(title=f"{gw.site.gateway.site} / {gw.site.gateway.id}", expand=True)
    for col in ("device", "bus", "unit", "state", "key points"):
        table.add_column(col, no_wrap=col != "key points")
    for col in ("tx", "p50 ms", "p99 ms", "timeouts", "crc"):
        table.add_column(col, justify="right")
    for poller in gw.pollers.values():
        st = poller.stats
        table.add_row(
            poller.name,
            poller.device.bus,
            str(poller.unit_id),
            _device_state(poller),
            _key_points(poller, gw),
            str(st.transactions),
            _ms(st.latency.p50),
            _ms(st.latency.p99),
            str(st.timeouts),
            str(st.crc_errors),
        )
    return table


def bus_table(gw: Gateway, now: float | None = None) -> RichTable:
    now = time.monotonic() if now is None else now
    table = RichTable(title="buses", expand=True)
    for col in ("bus", "tx/s", "utilisation", "p50 ms", "p99 ms", "timeouts", "crc", "retries"):
        table.add_column(col, justify="left" if col == "bus" else "right")
    for name, sched in gw.schedulers.items():
        st = sched.stats
        table.add_row(
            name,
            f"{st.transactions_per_s(now):.1f}",
            f"{st.utilisation(now):.0%}",
            _ms(st.latency.p50),
            _ms(st.latency.p99),
            str(st.timeouts),
            str(st.crc_errors),
            str(st.retries),
        )
    return table


SEVERITY_STYLE = {"critical": "bold red", "major": "red", "minor": "yellow", "info": "cyan"}


def alarm_table(events: Sequence[AlarmEvent], title: str = "active alarms") -> RichTable:
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


def loop_line(gw: Gateway) -> Text:
    snap = gw.supervisor.loop.snapshot()
    healthy = gw.supervisor.healthy()
    return Text(
        f"control loop {snap['period_ms']:.0f} ms: lateness p50 {snap['lateness_p50_ms']} ms, "
        f"p99 {snap['lateness_p99_ms']} ms, max {snap['lateness_max_ms']} ms"
        + ("" if healthy else "  UNHEALTHY: heartbeats stopped"),
        style="" if healthy else "bold red",
    )


def status_view(gw: Gateway) -> Group:
    parts: list[RenderableType] = [device_table(gw), bus_table(gw), loop_line(gw)]
    if gw.alarms.active:
        parts.append(alarm_table(gw.alarms.by_severity()))
    return Group(*parts)

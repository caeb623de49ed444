"""Prometheus metrics of a running gateway, served over HTTP when the site config has a
``[metrics]`` table (off without one; bound to 127.0.0.1 unless ``host`` says otherwise).

The numbers are the statistics the gateway keeps anyway — each bus's and device's counters
(:mod:`gateway.bus.stats`), the control loop's cycles and lateness
(:class:`gateway.control.loop.ControlLoop`), the uplink's outbox — read when Prometheus
scrapes. The official client's WSGI application answers on threads of their own, so a scrape
costs the event loop (the control loop's thread) nothing: no metric is updated on the way,
the collector only reads counters (plain integers and floats) and copies the latency
windows. Those threads run at the gateway's background priority
(:func:`gateway.priority.background_thread_priority`): below the control path, above the
machine's other load, so a scrape starved while it holds the interpreter lock cannot hold
the control loop up with it.

Names and labels follow Prometheus' conventions (a ``doorstep_gateway_`` prefix, base units,
counters ending in ``_total``); labels are the site's own bus and device names. Lateness and
latency quantiles are over the most recent cycles or transactions, as the status table shows
them. ``rate(doorstep_gateway_bus_busy_seconds_total[1m])`` is a bus's utilisation over the
last minute.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector
from pydantic import Field

from gateway.priority import background_thread_priority
from gateway.validation import Strict

if TYPE_CHECKING:
    from gateway.bus.stats import DeviceStats, LatencyWindow
    from gateway.runtime import Gateway

log = logging.getLogger(__name__)

QUANTILES = (0.5, 0.99)


class MetricsConfig(Strict):
    """``[metrics]``: where the gateway answers Prometheus' scrapes (``GET /metrics``). The
    numbers carry no secrets but say what the site does; expose them beyond the gateway
    (``host = "0.0.0.0"``) only on a network you trust."""

    port: int = Field(ge=1, le=65535)
    host: str = Field(default="127.0.0.1", min_length=1)


class GatewayCollector(Collector):
    """Reads a running :class:`~gateway.runtime.Gateway`'s statistics at each scrape."""

    def __init__(self, gateway: Gateway, version: str) -> None:
        self.gateway = gateway
        self.version = version

    def collect(self) -> Iterable[Metric]:
        yield from self._info()
        yield from self._buses()
        yield from self._devices()
        yield from self._control()
        yield from self._uplink()

    def _info(self) -> Iterator[Metric]:
        site = self.gateway.site.gateway
        info = GaugeMetricFamily(
            "doorstep_gateway_info", "This gateway: its site, id and version (always 1)",
            labels=["site", "gateway", "version"],
        )  # fmt: skip
        info.add_metric([site.site, site.id, self.version], 1)
        yield info
        yield GaugeMetricFamily(
            "doorstep_gateway_uptime_seconds", "Seconds since the gateway started",
            value=time.monotonic() - self.gateway.started_at,
        )  # fmt: skip

    def _buses(self) -> Iterator[Metric]:
        now = time.monotonic()
        buses = list(self.gateway.schedulers.items())
        counters = _counters("bus", ["bus"], "bus")
        busy = CounterMetricFamily(
            "doorstep_gateway_bus_busy_seconds",
            "Estimated time the bus's wire was busy with transactions", labels=["bus"],
        )  # fmt: skip
        utilisation = GaugeMetricFamily(
            "doorstep_gateway_bus_utilisation_ratio",
            "Wire busy time as a fraction of the time since start", labels=["bus"],
        )  # fmt: skip
        latency = GaugeMetricFamily(
            "doorstep_gateway_bus_latency_seconds",
            "Transaction latency over the bus's most recent transactions, by quantile",
            labels=["bus", "quantile"],
        )
        for name, scheduler in buses:
            stats = scheduler.stats
            _count(counters, stats, [name])
            busy.add_metric([name], stats.wire_busy_s)
            utilisation.add_metric([name], stats.utilisation(now))
            for q, seconds in _quantiles(stats.latency):
                latency.add_metric([name, q], seconds)
        yield from (*counters, busy, utilisation, latency)

    def _devices(self) -> Iterator[Metric]:
        counters = _counters("device", ["bus", "device"], "device")
        skipped = CounterMetricFamily(
            "doorstep_gateway_device_skipped_reads",
            "Reads not sent because the device's circuit breaker was open",
            labels=["bus", "device"],
        )
        offline = GaugeMetricFamily(
            "doorstep_gateway_device_offline",
            "1 while the device is marked offline (not answering), else 0",
            labels=["bus", "device"],
        )
        for name, poller in list(self.gateway.pollers.items()):
            labels = [poller.device.bus, name]
            _count(counters, poller.stats, labels)
            skipped.add_metric(labels, poller.stats.skipped_open)
            offline.add_metric(labels, 1 if self.gateway.image.offline(name) else 0)
        yield from (*counters, skipped, offline)

    def _control(self) -> Iterator[Metric]:
        supervisor = getattr(self.gateway, "supervisor", None)  # not yet during start-up
        if supervisor is None:
            return
        loop = supervisor.loop
        yield GaugeMetricFamily(
            "doorstep_gateway_control_period_seconds", "The control loop's period",
            value=loop.period_s,
        )  # fmt: skip
        for name, what, value in (
            ("cycles", "Control-loop cycles run", loop.cycles),
            ("skipped_cycles", "Cycles skipped because one ran late", loop.skipped),
            ("reactions", "Reactions to a changed interlock input between cycles", loop.reactions),
            (
                "write_errors",
                "Device writes of the control actions that failed",
                supervisor.write_errors,
            ),
        ):
            yield CounterMetricFamily(f"doorstep_gateway_control_{name}", what, value=value)
        lateness = GaugeMetricFamily(
            "doorstep_gateway_control_lateness_seconds",
            "How late control-loop cycles started over the most recent cycles, by quantile",
            labels=["quantile"],
        )
        for q, seconds in _quantiles(loop.lateness):
            lateness.add_metric([q], seconds)
        yield lateness
        yield GaugeMetricFamily(
            "doorstep_gateway_control_lateness_max_seconds",
            "The latest a control-loop cycle started since the gateway started",
            value=loop.max_lateness_s,
        )
        engine = getattr(self.gateway, "engine", None)
        if engine is not None:
            active = sum(1 for rule in list(engine.rules.values()) if rule.active)
            yield GaugeMetricFamily(
                "doorstep_gateway_interlocks_active", "Interlocks taking their actions now",
                value=active,
            )  # fmt: skip
        alarms = GaugeMetricFamily(
            "doorstep_gateway_alarms_active", "Active alarms by severity (suppressed ones too)",
            labels=["severity"],
        )  # fmt: skip
        by_severity: dict[str, int] = {}
        for event in list(self.gateway.alarms.active.values()):
            by_severity[event.severity.value] = by_severity.get(event.severity.value, 0) + 1
        for severity in ("critical", "major", "minor", "info"):
            alarms.add_metric([severity], by_severity.get(severity, 0))
        yield alarms

    def _uplink(self) -> Iterator[Metric]:
        uplink = self.gateway.uplink
        if uplink is None:
            return
        yield GaugeMetricFamily(
            "doorstep_gateway_uplink_connected", "1 while connected to the fleet's broker, else 0",
            value=1 if uplink.connected else 0,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "doorstep_gateway_outbox_messages", "Messages in the outbox waiting for the broker",
            value=uplink.depth,
        )  # fmt: skip
        yield CounterMetricFamily(
            "doorstep_gateway_outbox_dropped",
            "Messages the outbox dropped to stay within its bounds, and readings it could not "
            "store",
            value=uplink.dropped,
        )


def _counters(prefix: str, labels: list[str], of: str) -> list[CounterMetricFamily]:
    kinds = (
        ("transactions", "Modbus transactions answered"),
        ("timeouts", "Modbus requests not answered in time"),
        ("crc_errors", "Answers with a bad CRC or frame"),
        ("exceptions", "Modbus exception answers"),
        ("retries", "Requests sent again after a failure"),
    )
    return [
        CounterMetricFamily(f"doorstep_gateway_{prefix}_{name}", f"{what}, by {of}", labels=labels)
        for name, what in kinds
    ]


def _count(families: list[CounterMetricFamily], stats: DeviceStats, labels: list[str]) -> None:
    values = (stats.transactions, stats.timeouts, stats.crc_errors, stats.exceptions, stats.retries)
    for family, value in zip(families, values, strict=True):
        family.add_metric(labels, value)


def _quantiles(window: LatencyWindow) -> Iterator[tuple[str, float]]:
    """The window's quantiles as (label, seconds); none while it is empty. The window is
    appended to by the event loop meanwhile: a copy torn by that is skipped this scrape."""
    for q in QUANTILES:
        try:
            seconds = window.percentile(q * 100)
        except RuntimeError:  # deque mutated during iteration
            return
        if seconds is not None:
            yield str(q), seconds


@contextmanager
def serving(gateway: Gateway, config: MetricsConfig | None, version: str) -> Iterator[None]:
    """While inside: ``GET /metrics`` on ``config``'s host and port answers ``gateway``'s
    metrics (and this process's CPU and memory), from a thread of its own. Nothing without a
    config; a port that cannot be had is logged as an error and the gateway runs without."""
    if config is None:
        yield
        return
    registry = CollectorRegistry()  # collected at each scrape only, not when registered
    registry.register(GatewayCollector(gateway, version))
    ProcessCollector(namespace="doorstep_gateway", registry=registry)
    try:
        server = _server(config, make_wsgi_app(registry))
    except OSError as exc:
        log.error(
            "metrics: cannot listen on %s port %d (%s): [metrics] host and port; "
            "the gateway runs without metrics",
            config.host, config.port, exc,
        )  # fmt: skip
        yield
        return
    thread = threading.Thread(target=_serve, args=(server,), name="metrics", daemon=True)
    thread.start()
    log.info("metrics: Prometheus metrics at http://%s:%d/metrics", config.host, config.port)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every 15 s is not news


def _server(config: MetricsConfig, app: Callable[..., Any]) -> ThreadingWSGIServer:
    """The client's threading WSGI server on ``config``'s address, each request's thread at
    the background priority."""

    def at_background_priority(environ: dict[str, Any], start_response: Any) -> Any:
        background_thread_priority()
        return app(environ, start_response)

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in config.host else socket.AF_INET

    return make_server(
        config.host.strip("[]"), config.port, at_background_priority, Server, handler_class=_Quiet
    )


def _serve(server: ThreadingWSGIServer) -> None:
    background_thread_priority()
    server.serve_forever()

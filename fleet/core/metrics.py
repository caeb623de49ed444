"""What one fleet process tells Prometheus about its ingest (served at ``/metrics`` by
:mod:`fleet.api.metrics`), with the official client library.

Each process has its own registry (several apps in one test process do not share counters;
several worker processes are told apart by Prometheus' ``instance`` label). Names and labels
follow Prometheus' conventions: a ``doorstep_fleet_`` prefix, base units (seconds), counters
ending in ``_total``, and labels of few values (a message kind, an outcome, a rejection
reason) — never a gateway or a site, whose number is unbounded.

    doorstep_fleet_ingest_messages_total{kind,outcome}   outcome: stored, duplicate, rejected
    doorstep_fleet_ingest_readings_total                 telemetry readings stored
    doorstep_fleet_ingest_rejections_total{reason}       every reason, from 0
    doorstep_fleet_db_write_duration_seconds{kind}       one message's transaction
    doorstep_fleet_ingest_lag_seconds                    the gateway's batch time -> stored
    doorstep_fleet_mqtt_connected                        1 while subscribed to the broker
    doorstep_fleet_mqtt_connections_total                subscriptions made (reconnects)
    doorstep_fleet_broker_dropped_messages               the broker's own count (NaN: unknown)

The ingest rate is ``rate(doorstep_fleet_ingest_readings_total[1m])`` (readings) or of the
messages counter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: one message's transaction: a few ms on a quiet SQLite, up to seconds on a loaded database
WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: a batch waits on the gateway for its batch period (1 s by default), then on the way
LAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
OUTCOMES = ("stored", "duplicate", "rejected")


class FleetMetrics:
    """The registry of one fleet process and the metrics ingest and its feed update."""

    def __init__(self, reasons: Iterable[str] = (), kinds: Iterable[str] = ()) -> None:
        """``reasons`` and ``kinds``: the label values to show from 0 before any happens."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages = Counter(
            "doorstep_fleet_ingest_messages",
            "Gateway messages ingest handled, by kind and outcome", ["kind", "outcome"], registry=r,
        )  # fmt: skip
        self.readings = Counter(
            "doorstep_fleet_ingest_readings", "Telemetry readings stored", registry=r
        )
        self.rejections = Counter(
            "doorstep_fleet_ingest_rejections", "Gateway messages ingest refused, by reason",
            ["reason"], registry=r,
        )  # fmt: skip
        self.write_seconds = Histogram(
            "doorstep_fleet_db_write_duration_seconds",
            "Time to store one gateway message in the database (its one transaction), by kind",
            ["kind"], buckets=WRITE_BUCKETS, registry=r,
        )  # fmt: skip
        self.lag_seconds = Histogram(
            "doorstep_fleet_ingest_lag_seconds",
            "From the time a gateway stamped a batch to the time it was stored",
            buckets=LAG_BUCKETS, registry=r,
        )  # fmt: skip
        self.mqtt_connected = Gauge(
            "doorstep_fleet_mqtt_connected",
            "1 while ingest is connected and subscribed to the MQTT broker, else 0",
            registry=r,
        )
        self.mqtt_connections = Counter(
            "doorstep_fleet_mqtt_connections",
            "Times ingest connected and subscribed to the MQTT broker",
            registry=r,
        )
        self.broker_dropped = Gauge(
            "doorstep_fleet_broker_dropped_messages",
            "Messages the MQTT broker dropped since it started ($SYS/broker/publish/messages/"
            "dropped, fleet.core.broker_check); NaN while the broker has not told",
            registry=r,
        )
        self.broker_dropped.set(math.nan)
        for reason in reasons:
            self.rejections.labels(reason)
        for kind in kinds:
            for outcome in OUTCOMES:
                self.messages.labels(kind, outcome)

    def handled(
        self,
        kind: str | None,
        outcome: str,
        *,
        reason: str | None = None,
        write_s: float | None = None,
        lag_s: float | None = None,
        readings: int = 0,
    ) -> None:
        """One message handled: its kind (None for a topic not understood), its outcome, why
        it was refused, how long its transaction took, how late it was stored, and how many
        readings it brought."""
        self.messages.labels(kind or "unknown", outcome).inc()
        if reason is not None:
            self.rejections.labels(reason).inc()
        if write_s is not None and kind is not None:
            self.write_seconds.labels(kind).observe(write_s)
        if lag_s is not None and outcome == "stored":
            self.lag_seconds.observe(max(0.0, lag_s))
        if readings:
            self.readings.inc(readings)

    def connected(self, up: bool) -> None:
        """Ingest's connection to the broker came up (subscribed) or went down."""
        if up:
            self.mqtt_connections.inc()
        self.mqtt_connected.set(1 if up else 0)

    def exposition(self) -> bytes:
        """Every metric in Prometheus' text format."""
        return generate_latest(self.registry)

"""Outbox drain rate after a simulated one-hour outage.

An hour of a gateway's production is put in its outbox as the uplink would have written it
with the broker away: one telemetry batch a second of 100 readings (10 devices × 10 points
changing) and an alarm event a minute. Then the uplink connects to Debian's mosquitto and
drains it (QoS 1, ``window`` publishes in flight, each acknowledged prefix deleted with a
``synchronous=FULL`` commit). Measured: time from connect to an empty outbox, rows and MB per
second, and the same with a subscriber receiving everything (the fleet's view).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from bench.report import write_result
from gateway import wire
from gateway.image import Quality, Sample
from gateway.uplink.config import UplinkConfig
from gateway.uplink.link import Uplink
from gateway.uplink.outbox import Outbox
from gateway.uplink.reporting import reading
from hil_tests.broker import Mosquitto
from hil_tests.uplink_helpers import recording

NAME = "outbox_drain"
OUTAGE_S = 3600
READINGS = 100
SITE, GATEWAY = "bench", "gw-drain"


def fill(state: Path) -> tuple[int, int]:
    """One hour of batches in the outbox; (rows, bytes)."""
    topics = {k: wire.topic(SITE, GATEWAY, k) for k in wire.Kind}
    size = 0
    with Outbox(state / "outbox.sqlite", synchronous="normal") as box:
        for second in range(OUTAGE_S):
            readings = [
                reading(
                    f"dev-{i // 10}", f"p{i % 10}", Sample(second + i * 0.1, 0.0, Quality.GOOD), 0
                )
                for i in range(READINGS)
            ]

            def batch(seq: int, readings: list[wire.Reading] = readings) -> bytes:
                return wire.encode(wire.TelemetryBatch(seq=seq, at=time.time(), readings=readings))

            box.append("telemetry", topics[wire.Kind.TELEMETRY], batch)
            if second % 60 == 0:
                event = wire.Event(
                    id=second // 60 + 1, kind="raised", key="k", severity="minor",
                    interlock="i", device=None, message="m", at=time.time(),
                )  # fmt: skip

                def events(seq: int, event: wire.Event = event) -> bytes:
                    return wire.encode(wire.EventBatch(seq=seq, at=time.time(), events=[event]))

                box.append("events", topics[wire.Kind.EVENTS], events)
        rows = box.depth
        for row in box.peek(rows):
            size += len(row.payload)
    return rows, size


async def drain(port: int, state: Path, rows: int) -> tuple[float, float]:
    """(seconds until the outbox is empty, seconds until the subscriber has every row)."""
    config = UplinkConfig(
        broker=f"mqtt://127.0.0.1:{port}", batch_interval_s=60, health_interval_s=3600
    )
    async with recording(port) as rec:
        start = time.monotonic()
        async with Uplink(config, site=SITE, gateway=GATEWAY, state_dir=state) as uplink:
            await rec.wait_for(lambda: uplink.depth == 0, within=600, what="an empty outbox")
            drained = time.monotonic() - start
            await rec.wait_for(
                lambda: len(rec.of("telemetry")) + len(rec.of("events")) >= rows,
                within=600,
                what="every row at the subscriber",
            )
            received = time.monotonic() - start
    return drained, received


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        state.mkdir()
        rows, size = fill(state)
        with Mosquitto(Path(tmp) / "mosquitto") as mq:
            drained, received = asyncio.run(drain(mq.port, state, rows))
    write_result(
        NAME,
        {
            "rows": rows,
            "megabytes": size / 1e6,
            "drain_s": drained,
            "rows_per_s": rows / drained,
            "mb_per_s": size / 1e6 / drained,
            "received_s": received,
            "outage_to_drain_ratio": OUTAGE_S / drained,
        },
        units={
            "rows": "count",
            "megabytes": "MB",
            "drain_s": "s",
            "rows_per_s": "1/s",
            "mb_per_s": "MB/s",
            "received_s": "s",
            "outage_to_drain_ratio": "x",
        },
    )


if __name__ == "__main__":
    main()

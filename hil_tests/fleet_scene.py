"""A small fleet as the maintenance screens' tests see it, as the messages its gateways send
(real ``gateway.wire`` payloads, fed to the real ingest by whoever plays them):

- Lianhua Garden (``lianhua``): gw-01 online with an elevator taken out of service twenty
  minutes ago, a charger locked out by its residual-current device (the critical alarm,
  three minutes old, with an interlock alarm suppressed under it), an SIO-1 whose loops are
  healthy, a PV inverter curtailed to 60 % whose power reading is stale, a site meter, and a
  device of a model the fleet has no profile of; gw-02 registered but never connected.
- Harbour View (``harbour``): gw-03 offline for ten minutes.
- Sunny Court (``sunny``): gw-04 online, all well.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from gateway import wire

LIANHUA, HARBOUR, SUNNY = "lianhua", "harbour", "sunny"
TITLES = {LIANHUA: "Lianhua Garden", HARBOUR: "Harbour View", SUNNY: "Sunny Court"}
GATEWAYS = {LIANHUA: ["gw-01", "gw-02"], HARBOUR: ["gw-03"], SUNNY: ["gw-04"]}
DEVICES = {
    "elv-1": "ELV-24476",
    "evse-1": "EVSE-HEC",
    "sio": "SIO-1",
    "pv-1": "SUNSPEC-INV",
    "meter": "SUNSPEC-METER",
    "weather": "WX-9",  # no profile: shown by point name
}
CRITICAL = "evse-1 locked out: residual current"


@dataclass(frozen=True)
class Message:
    site: str
    gateway: str
    payload: wire.Payload


def _reading(
    device: str, point: str, value: wire.Scalar, at: float, quality: str = "good"
) -> wire.Reading:
    return wire.Reading(d=device, p=point, v=value, q=quality, t=at)  # type: ignore[arg-type]


def _event(
    event_id: int, key: str, severity: str, message: str, at: float, **more: object
) -> wire.Event:
    return wire.Event(
        id=event_id, kind="raised", key=key, severity=severity,  # type: ignore[arg-type]
        interlock=key.split(":")[0], message=message, at=at, **more,  # type: ignore[arg-type]
    )  # fmt: skip


def scene(now: float) -> Iterator[Message]:
    """The messages, in order; ``now`` is the time the scene is played."""
    devices = {LIANHUA: DEVICES, SUNNY: {"meter": "SUNSPEC-METER"}, HARBOUR: {"elv-a": "ELV-24476"}}
    for site, gw, status, at in (
        (LIANHUA, "gw-01", "online", now),
        (SUNNY, "gw-04", "online", now),
        (HARBOUR, "gw-03", "offline", now - 600),
    ):
        state = wire.State(
            status=status, version="1.4.2", started_at=now - 7200, at=at, devices=devices[site]
        )
        yield Message(site, gw, state)
    yield Message(
        LIANHUA, "gw-01",
        wire.Health(
            at=now, uptime_s=7200, version="1.4.2", cpu_percent=12.0, memory_mib=86.0,
            disk_free_mib=1500.0, outbox_depth=3, outbox_dropped=0,
            buses={"bldg-1": {"requests": 1200, "timeouts": 2}},
        ),
    )  # fmt: skip
    # an hour of charger current (a ramp with ripple: each plotted interval has a band) and
    # the elevator leaving normal service twenty minutes ago
    history = [
        _reading("evse-1", "l1_current", 6.0 + (i // 6) % 20 + (i % 2) * 0.8, now - 3600 + i * 10)
        for i in range(360)
    ]
    history += [
        _reading("elv-1", "service_mode", 1, now - 3000),
        _reading("elv-1", "service_mode", 2, now - 2400),
        _reading("elv-1", "service_mode", 1, now - 1800),
        _reading("elv-1", "service_mode", 0, now - 1200),
    ]
    yield Message(LIANHUA, "gw-01", wire.TelemetryBatch(seq=1, at=now, readings=history))
    latest = [
        _reading("elv-1", "car_position", 3, now),
        _reading("elv-1", "car_door_state", 2, now),
        _reading("elv-1", "passenger_status", 0, now),
        _reading("elv-1", "cps_heartbeat", 4711, now),
        _reading("evse-1", "cp_state", 5, now),
        _reading("evse-1", "l1_current", 0.0, now),
        _reading("evse-1", "power", 0, now),
        _reading("evse-1", "residual_current_status", 1, now),
        _reading("evse-1", "lockout_latched", 1, now),
        _reading("evse-1", "temperature", 35.5, now),
        _reading("evse-1", "watchdog_remaining", 138, now),
        _reading("sio", "fire_alarm_loop", True, now),
        _reading("sio", "estop", True, now),
        _reading("sio", "state", 1, now),
        _reading("sio", "input_bitmap", 0b11, now),
        _reading("pv-1", "w", 3450.0, now - 400, "stale"),
        _reading("pv-1", "w_sf", 0, now),
        _reading("pv-1", "wmaxlimpct", 60.0, now),
        _reading("pv-1", "wmaxlim_ena", 1, now),
        _reading("pv-1", "st", 5, now),
        _reading("meter", "w", -1200.0, now),
        _reading("meter", "w_sf", 0, now),
        _reading("weather", "wind_speed", 4.5, now),
    ]
    yield Message(LIANHUA, "gw-01", wire.TelemetryBatch(seq=2, at=now, readings=latest))
    yield Message(
        SUNNY, "gw-04",
        wire.TelemetryBatch(seq=1, at=now, readings=[_reading("meter", "w", 800.0, now)]),
    )  # fmt: skip
    yield Message(
        LIANHUA, "gw-01",
        wire.EventBatch(seq=1, at=now, events=[
            _event(1, "I5:evse-1", "critical", CRITICAL, now - 180, device="evse-1"),
            _event(2, "I4:evse-1", "major", "evse-1 current not confirmed", now - 170,
                   device="evse-1", suppressed_by="I5:evse-1"),
            _event(3, "lck:forced", "minor", "Door 3 forced open", now - 100, device="lck-1"),
        ]),
    )  # fmt: skip


def registrations() -> Iterator[tuple[str, str, str]]:
    """(site, gateway, site title) of every gateway to register before the scene plays."""
    for site, gateways in GATEWAYS.items():
        for gateway in gateways:
            yield site, gateway, TITLES[site]

"""The gateway's side of the SIO-1 safety I/O controller (see
docs/safety.md#what-the-gateway-does-with-it).

The board's relays are demanded like any other point — interlocks place demands on
``sio.pv_rsd_keepalive`` and the others in the actuator — but only this driver writes them,
as one bitmap (HR 2), and only inside the claim protocol:

1. before the first write, read back IR 0 (map version 0x0100), IR 4, IR 7 and IR 8;
2. write HR 1 if the site sets a timeout, claim (HR 3), then HR 2 with the outputs wanted
   *now* (never a remembered bitmap). The board refuses HR 2 outside CLAIMED, and the
   claim leaves HR 2 at 0 (all off), so claiming first is the safe sequence the board
   accepts;
3. heartbeats (HR 0) come from the watchdog keeper, at a third of the timeout, only while the
   control loop is healthy;
4. alarm when the board is not CLAIMED while the gateway believes it holds the claim, when its
   remaining watchdog time runs below a third, when its failsafe trip counter increments, and
   when the actual outputs disagree with the requested ones — then claim again.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.control.actuator import Actuator
from gateway.control.alarms import AlarmLog, Severity
from gateway.devices.codec import Value
from gateway.devices.profile import load_profile
from gateway.image import ProcessImage

#: The register map this gateway speaks (the SIO-1 profile's identity).
MAP_VERSION = load_profile("SIO-1").identity["map_version"]
CLAIM_VALUE = 0xC1A1
CLAIMED = 1
#: The relays, by coil number; and what each does when no interlock demands otherwise.
OUTPUTS = {
    "charger_feeder_enable": (0, 1),
    "pv_rsd_keepalive": (1, 1),
    "elv_fire_recall_req": (2, 0),
    "alarm_sounder": (3, 0),
}
#: Actual outputs may lag a request by a poll or two before a mismatch is an alarm.
MISMATCH_GRACE_S = 1.0
READ_BACK = ("map_version", "state", "input_bitmap", "output_bitmap")


@dataclass(frozen=True)
class Step:
    point: str
    value: Value


class SafetyIo:
    """Claims one SIO-1 board and keeps its requested outputs in line with the demands."""

    def __init__(
        self,
        device: str,
        actuator: Actuator,
        image: ProcessImage,
        alarms: AlarmLog,
        timeout_ms: int | None = None,
    ) -> None:
        self.device = device
        self.timeout_ms = timeout_ms
        self.actuator = actuator
        self.image = image
        self.alarms = alarms
        self.claimed = False  # the gateway believes it holds the claim
        self.sent_bitmap: int | None = None
        self.claims = 0
        self._trips: int | None = None
        self._mismatch_since: float | None = None
        self._claimed_at: float | None = None  # when the last claim was sent
        for name, (_, normal) in OUTPUTS.items():
            actuator.target(device, name, release=normal, owned=True)

    def wanted_bitmap(self) -> int:
        bitmap = 0
        for name, (bit, _) in OUTPUTS.items():
            if self.actuator.wanted(self.device, name):
                bitmap |= 1 << bit
        return bitmap

    def tick(self, now: float) -> list[Step]:
        """The writes due now, in order (one sequence; the caller sends them one by one)."""
        if not self._read_back():
            return []
        self._watch(now)
        wanted = self.wanted_bitmap()
        if not self.claimed:
            self.claimed = True
            self.claims += 1
            self._claimed_at = now
            self.sent_bitmap = wanted
            # claim, then the outputs: the board refuses HR 2 outside CLAIMED (exception 04,
            # docs/devices.md#sio-1), and after BOOT-SAFE/FAILSAFE HR 2 is 0 already
            steps = [Step("claim", CLAIM_VALUE), Step("requested_outputs", wanted)]
            if self.timeout_ms is not None:
                steps.insert(0, Step("watchdog_timeout", self.timeout_ms))
            return steps
        if wanted != self.sent_bitmap:
            self.sent_bitmap = wanted
            return [Step("requested_outputs", wanted)]
        return []

    def lost(self) -> None:
        """A write of the sequence failed: claim again from the start next time."""
        self.claimed = False
        self.sent_bitmap = None

    def _read_back(self) -> bool:
        values = [self.image.reading(self.device, p) for p in READ_BACK]
        if any(v is None for v in values):
            return False
        if values[0] != MAP_VERSION:
            self._alarm(
                "map",
                Severity.MAJOR,
                f"SIO-1 map version {values[0]!r}, expected {MAP_VERSION:#06x}",
            )
            return False
        return True

    def _watch(self, now: float) -> None:
        state = self.image.reading(self.device, "state")
        # a state read before the claim went out says nothing about the claim
        read_at = self.image.get(self.device, "state").at
        fresh = self._claimed_at is None or read_at >= self._claimed_at
        if self.claimed and state != CLAIMED and fresh:
            self._alarm("claim", Severity.MAJOR, f"SIO-1 left CLAIMED (state {state}); re-claiming")
            self.claimed = False
        elif state == CLAIMED:
            self.alarms.clear(self._key("claim"))
        trips = self.image.reading(self.device, "failsafe_trips")
        if isinstance(trips, int):
            if self._trips is not None and trips > self._trips:
                message = f"SIO-1 failsafe trip count rose to {trips}"
                key = self._key("trips")
                if key in self.alarms.active:  # a counter: the one alarm follows its value
                    self.alarms.update(key, message=message, values={"failsafe_trips": trips})
                else:
                    self._alarm("trips", Severity.MAJOR, message)
            self._trips = trips
        self._check_outputs(now)

    def _check_outputs(self, now: float) -> None:
        actual = self.image.reading(self.device, "output_bitmap")
        if not self.claimed or not isinstance(actual, int) or self.sent_bitmap is None:
            self._mismatch_since = None
            return
        mask = sum(1 << bit for bit, _ in OUTPUTS.values())
        if actual & mask == self.sent_bitmap:
            self._mismatch_since = None
            self.alarms.clear(self._key("outputs"))
            return
        if self._mismatch_since is None:
            self._mismatch_since = now
        elif now - self._mismatch_since > MISMATCH_GRACE_S:
            self._alarm(
                "outputs",
                Severity.MAJOR,
                f"SIO-1 outputs {actual:#06b} differ from requested {self.sent_bitmap:#06b}",
            )

    def _key(self, what: str) -> str:
        return f"sio:{self.device}/{what}"

    def _alarm(self, what: str, severity: Severity, message: str) -> None:
        self.alarms.raise_(self._key(what), severity, "sio-claim", message, device=self.device)

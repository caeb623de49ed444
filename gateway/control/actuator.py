"""What the interlocks want written, arbitrated per point, and the writes that follow from it.

Every writable point that an interlock acts on is a :class:`Target` with a priority array
(after BACnet's): each source (an interlock) places a demand at a priority, the most urgent
demand wins, and when it is withdrawn the next one applies — or the point's release value if
nothing demands it any more. A demand may instead be a *limit* (a ceiling): the lowest limit
caps whatever value wins, so a feeder allocation, a derating and a fire stop combine safely.
Increases can be ramped; decreases never are.

Writes go out only after the device's state has been read back (I9, see
docs/interlocks.md#i9-restart), only when the wanted value differs from what the device
reports, and decreases before increases so that a sum of setpoints on the wire never passes
through a higher total.

A write that fails (the device does not answer, or refuses) is tried again as soon as the
device answers a read, and otherwise once every ``RETRY_FAILED_S``: not on every cycle, which
would fill the bus with requests to a dead device and the log with their failures. The target
counts its failed attempts (:attr:`Target.failures`) so the failure is told once, with the
count, rather than once per attempt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.devices.codec import Value
from gateway.image import ProcessImage, Quality

#: Demand priorities, most urgent first (after BACnet's priority array): life safety, then
#: equipment protection, then automatic control, then an operator's own setting.
PRIORITY_LIFE_SAFETY = 1
PRIORITY_PROTECTION = 3
PRIORITY_CONTROL = 8
PRIORITY_OPERATOR = 12

#: Re-send a wanted value the device does not report after this long (a device that
#: rebooted to its defaults, a write lost on the line).
REASSERT_S = 2.0
#: Try a failed write again after this long when the device has not answered since.
RETRY_FAILED_S = 1.0


@dataclass(frozen=True)
class Demand:
    value: Value
    priority: int
    limit: bool = False


@dataclass(frozen=True)
class PlannedWrite:
    device: str
    point: str
    value: Value
    decrease: bool


@dataclass
class Target:
    device: str
    point: str
    release: Value = None
    ramp_per_s: float | None = None
    #: Written by a device driver of its own (the SIO-1 claim protocol), not by the actuator.
    owned: bool = False
    #: Re-send the wanted value this often even when the device holds it: a setpoint that
    #: the device reverts on its own unless refreshed (SunSpec WMaxLimPct_RvrtTms).
    refresh_s: float | None = None
    demands: dict[str, Demand] = field(default_factory=dict)
    sent: Value = None
    sent_at: float = -1e9
    ramped: float | None = None  # the ramp's current value while an increase is ramping
    failures: int = 0  # failed attempts since the last write that went through
    failing_since: float | None = None
    failed_at: float = -1e9

    def wanted(self) -> Value:
        """The winning demand, capped by every limit; the release value if none."""
        values = [d for d in self.demands.values() if not d.limit]
        limits = [d.value for d in self.demands.values() if d.limit]
        base = min(values, key=lambda d: d.priority).value if values else None
        numeric = [v for v in limits if isinstance(v, int | float)]
        if numeric:
            cap = min(numeric)
            if base is None or not isinstance(base, int | float) or base > cap:
                base = cap
        return self.release if base is None else base


class Actuator:
    """The targets of one site and the writes needed to bring devices to what is wanted."""

    def __init__(self, image: ProcessImage) -> None:
        self.image = image
        self.targets: dict[tuple[str, str], Target] = {}
        self.read_back: set[tuple[str, str]] = set()  # targets read GOOD since start
        self._inhibits: dict[str, set[str]] = {}  # "device.function" → sources holding it

    def target(
        self,
        device: str,
        point: str,
        *,
        release: Value = None,
        ramp_per_s: float | None = None,
        owned: bool = False,
        refresh_s: float | None = None,
    ) -> Target:
        key = (device, point)
        if key not in self.targets:
            self.targets[key] = Target(device, point, release, ramp_per_s, owned, refresh_s)
        t = self.targets[key]
        if refresh_s is not None:
            t.refresh_s = refresh_s
        if owned:
            t.owned = True
        if release is not None:
            t.release = release
        if ramp_per_s is not None:
            t.ramp_per_s = ramp_per_s
        return t

    def demand(
        self, source: str, device: str, point: str, value: Value, priority: int, *, limit: bool
    ) -> None:
        self.target(device, point).demands[source] = Demand(value, priority, limit)

    def withdraw(self, source: str, device: str, point: str) -> None:
        t = self.targets.get((device, point))
        if t is not None:
            t.demands.pop(source, None)

    def inhibit(self, source: str, function: str) -> None:
        self._inhibits.setdefault(function, set()).add(source)

    def allow(self, source: str, function: str) -> None:
        self._inhibits.get(function, set()).discard(source)

    def inhibited_by(self, function: str) -> list[str]:
        """The interlocks that hold ``device.function`` suspended now."""
        return sorted(self._inhibits.get(function, ()))

    def wanted(self, device: str, point: str) -> Value:
        return self.targets[(device, point)].wanted()

    def plan(self, now: float, dt: float) -> list[PlannedWrite]:
        """The writes due now, decreases first. ``dt`` is the time since the last plan."""
        writes = []
        for t in self.targets.values():
            if t.owned or not self._has_read_back(t) or self._retry_later(t, now):
                continue
            value = self._ramp(t, t.wanted(), dt)
            if value is None:
                continue
            reported = self._reported(t)
            due = t.refresh_s is not None and now - t.sent_at >= t.refresh_s
            if value == reported and not due:
                t.sent = value  # the device holds it already
                continue
            if value == t.sent and not due and self._awaiting_read_back(t, now):
                continue  # sent and not read back yet; a write-only point is sent once
            before = reported if reported is not None else t.sent
            decrease = (
                isinstance(value, int | float)
                and isinstance(before, int | float)
                and value < before
            )
            writes.append(PlannedWrite(t.device, t.point, value, decrease))
        writes.sort(key=lambda w: not w.decrease)
        return writes

    def sent(self, write: PlannedWrite, now: float) -> int:
        """The write went through; how many attempts had failed before it."""
        t = self.targets[(write.device, write.point)]
        t.sent, t.sent_at = write.value, now
        failed, t.failures, t.failing_since = t.failures, 0, None
        return failed

    def failed(self, write: PlannedWrite, now: float) -> int:
        """The write failed; how many attempts have failed in a row, this one included."""
        t = self.targets[(write.device, write.point)]
        t.failures += 1
        t.failed_at = now
        if t.failing_since is None:
            t.failing_since = now
        return t.failures

    def _retry_later(self, t: Target, now: float) -> bool:
        """The last attempt failed, the device has not answered a read since, and it is not
        ``RETRY_FAILED_S`` ago yet."""
        if not t.failures:
            return False
        sample = self.image.find(t.device, t.point)
        if sample is not None and sample.quality is Quality.GOOD and sample.at > t.failed_at:
            return False
        return now - t.failed_at < RETRY_FAILED_S

    def _awaiting_read_back(self, t: Target, now: float) -> bool:
        """The last write may not have been read back yet: no good reading since it was sent
        (a device that changed since — a reboot, another master — is written again at once),
        and not longer than ``REASSERT_S`` ago. A write-only point is never read back."""
        sample = self.image.find(t.device, t.point)
        if sample is None:
            return True
        return sample.at <= t.sent_at and now - t.sent_at < REASSERT_S

    def _ramp(self, t: Target, value: Value, dt: float) -> Value:
        if t.ramp_per_s is None or not isinstance(value, int | float):
            return value
        current = t.ramped if t.ramped is not None else self._reported(t)
        if not isinstance(current, int | float) or value <= current:
            t.ramped = float(value)
            return value
        t.ramped = min(float(value), float(current) + t.ramp_per_s * dt)
        return t.ramped

    def _reported(self, t: Target) -> Value:
        sample = self.image.get(t.device, t.point) if self._declared(t) else None
        if sample is None or sample.quality is not Quality.GOOD:
            return None
        return sample.value

    def _declared(self, t: Target) -> bool:
        try:
            self.image.get(t.device, t.point)
        except KeyError:
            return False
        return True

    def _has_read_back(self, t: Target) -> bool:
        """True once the point (or, for a write-only point, its device) has been read GOOD
        since start: nothing is written to a device whose state is not known (I9)."""
        if (t.device, t.point) in self.read_back:
            return True
        if self._declared(t):
            ok = self._reported(t) is not None
        else:
            ok = any(s.quality is Quality.GOOD for _, _, s in self.image.points(t.device))
        if ok:
            self.read_back.add((t.device, t.point))
        return ok

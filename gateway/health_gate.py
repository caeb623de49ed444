"""Is the running site healthy? A window watched after a configuration apply or a restart.

:class:`HealthGate` watches a running :class:`~gateway.runtime.Gateway` for a window and gives
a :class:`Verdict`: healthy, or unhealthy with a reason a person understands. In the window:

* every bus that changed (all of them after a restart) completes at least one transaction;
* no device that did not change loses communication (it was answering when the window
  opened and is marked offline now);
* the control loop stays on time: no more skipped cycles than allowed, and never so late that
  it stops vouching for the site (``[control] unhealthy_after_ms``);
* the broker is reachable, when the site has an ``[uplink]`` (connected at some point);
* every SIO-1 is claimed when the window closes.

A failure of the first three kinds ends the window at once (no point waiting: the apply is
rolled back sooner); the others are judged when it closes. Used by the configuration agent
(:mod:`gateway.config.agent`) and after an over-the-air update.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.runtime import Gateway


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    reason: str = ""  # why not, for a person: "bus 'rtu-2' did not complete a transaction …"

    def __str__(self) -> str:
        return "healthy" if self.healthy else f"unhealthy: {self.reason}"


HEALTHY = Verdict(True)


class HealthGate:
    """Watch ``gateway`` for ``window_s`` seconds; ``await gate.watch(...)`` → :class:`Verdict`."""

    def __init__(
        self,
        gateway: Gateway,
        window_s: float,
        *,
        skipped_allowed: int = 0,
        every_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gateway = gateway
        self.window_s = window_s
        self.skipped_allowed = skipped_allowed
        self.every_s = every_s
        self.clock = clock

    async def watch(
        self,
        *,
        changed_buses: Collection[str] | None = None,
        unchanged_devices: Collection[str] = (),
    ) -> Verdict:
        """The verdict on the window starting now. ``changed_buses``: the buses that must prove
        they poll (None: every bus of the site); ``unchanged_devices``: the devices that must
        not lose communication."""
        gw = self.gateway
        start = self.clock()
        buses = set(gw.schedulers) if changed_buses is None else set(changed_buses)
        missing = sorted(buses - set(gw.schedulers))
        if missing:
            return Verdict(False, f"bus {missing[0]!r} is not running")
        counted = {name: gw.schedulers[name].stats.transactions for name in buses}
        answering = {d for d in unchanged_devices if d in gw.pollers and not gw.image.offline(d)}
        skipped = _skipped(gw)
        broker_seen = gw.uplink is None or gw.uplink.connected
        while True:
            now = self.clock()
            verdict = self._running_checks(gw, answering, skipped)
            if verdict is not None:
                return verdict
            if gw.uplink is not None and gw.uplink.connected:
                broker_seen = True
            if now - start >= self.window_s:
                break
            await asyncio.sleep(min(self.every_s, max(0.0, start + self.window_s - now)))
        for name in sorted(buses):
            scheduler = gw.schedulers.get(name)
            if scheduler is None:
                return Verdict(False, f"bus {name!r} stopped during the health window")
            # the bus counts only completed transactions (its last_ok_at is per device)
            if scheduler.stats.transactions <= counted[name]:
                return Verdict(
                    False,
                    f"bus {name!r} did not complete a single transaction in the "
                    f"{self.window_s:g} s health window",
                )
        if not broker_seen:
            return Verdict(
                False, f"the broker was not reachable during the {self.window_s:g} s window"
            )
        supervisor = getattr(gw, "supervisor", None)
        for sio in supervisor.safety_ios if supervisor is not None else ():
            if not sio.claimed:
                return Verdict(False, f"{sio.device} (SIO-1) is not claimed at the window's end")
        return HEALTHY

    def _running_checks(self, gw: Gateway, answering: set[str], skipped: int) -> Verdict | None:
        """What fails the window at once: a skipped cycle, a late loop, a device lost."""
        now_skipped = _skipped(gw) - skipped
        if now_skipped > self.skipped_allowed:
            return Verdict(
                False,
                f"the control loop skipped {now_skipped} cycle(s) "
                f"(allowed: {self.skipped_allowed})",
            )
        supervisor = getattr(gw, "supervisor", None)
        if supervisor is not None and not supervisor.healthy():
            return Verdict(
                False,
                f"the control loop ran more than {supervisor.config.unhealthy_after_ms:g} ms late",
            )
        lost = sorted(d for d in answering if gw.image.offline(d))
        if lost:
            return Verdict(
                False, f"{', '.join(lost)} stopped answering (communication lost) after the change"
            )
        return None


def _skipped(gw: Gateway) -> int:
    supervisor = getattr(gw, "supervisor", None)
    return 0 if supervisor is None else supervisor.loop.skipped

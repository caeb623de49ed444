"""Failed logins slow down guessing: after a run of failures for one user name from one
client address (known name or not, so the answer says nothing about which names exist), or
a longer run from one address whatever the names, logging in from there is refused with 429
until a quiet window has passed since the last failure. A stranger's wrong passwords never
lock a real user out: the runs are counted per name *and* address, so the user's own
address still logs in.

The throttle is checked when a login arrives and again when its turn for one of the few
concurrent password checks comes (failures may have come in while it waited), so a burst
of parallel guesses gets at most a few more tries than the limit. State is in memory, per
process: a restart forgets it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fleet.core.settings import Settings
from fleet.errors import TooManyLogins

#: at most this many names and addresses remembered; beyond it the stalest are forgotten
MAX_KEYS = 100_000


@dataclass
class _Run:
    """Failures in a row, each less than the window after the previous one."""

    count: int
    last: float


@dataclass
class LoginThrottle:
    per_name: int
    per_address: int
    window: float  # seconds
    clock: Callable[[], float] = time.monotonic
    _runs: dict[tuple[str, str, str], _Run] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginThrottle:
        return cls(
            per_name=settings.login_failures_per_name,
            per_address=settings.login_failures_per_address,
            window=settings.login_failure_window.total_seconds(),
        )

    def check(self, name: str, address: str) -> None:
        """TooManyLogins if ``name`` from ``address``, or ``address`` whatever the name, has
        had its run of failures and the window since the last one has not passed yet."""
        now = self.clock()
        for key, limit, who in (
            (("name", name, address), self.per_name, f"for {name} from {address}"),
            (("address", address, ""), self.per_address, f"from {address}"),
        ):
            run = self._current(key, now)
            if run is not None and run.count >= limit:
                wait = max(1, math.ceil(run.last + self.window - now))
                raise TooManyLogins(f"too many failed logins {who}; try again in {wait} s", wait)

    def failed(self, name: str, address: str) -> None:
        now = self.clock()
        for key in (("name", name, address), ("address", address, "")):
            run = self._current(key, now)
            self._runs[key] = _Run(count=1 if run is None else run.count + 1, last=now)
        self._forget_stale(now)

    def succeeded(self, name: str, address: str) -> None:
        """The right password: the run of failures of the name from that address ends (the
        address's goes on)."""
        self._runs.pop(("name", name, address), None)

    def _current(self, key: tuple[str, str, str], now: float) -> _Run | None:
        run = self._runs.get(key)
        if run is not None and now - run.last >= self.window:
            del self._runs[key]
            return None
        return run

    def _forget_stale(self, now: float) -> None:
        if len(self._runs) <= MAX_KEYS:
            return
        for key in [k for k, run in self._runs.items() if now - run.last >= self.window]:
            del self._runs[key]
        while len(self._runs) > MAX_KEYS:  # a flood of names: the oldest entries go first
            del self._runs[next(iter(self._runs))]


@dataclass
class LoginGuard:
    """One app's login throttle and its limit on concurrent argon2 checks."""

    throttle: LoginThrottle
    password_checks: asyncio.Semaphore

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginGuard:
        return cls(
            LoginThrottle.from_settings(settings), asyncio.Semaphore(settings.password_checks)
        )

    @asynccontextmanager
    async def password_check(self, name: str, address: str) -> AsyncIterator[None]:
        """One of the limited password-check slots, the throttle checked once it is ours."""
        async with self.password_checks:
            self.throttle.check(name, address)
            yield

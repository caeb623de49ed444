"""Failed logins slow down guessing: after a run of failures for one user name from one
client address (known name or not, so the answer says nothing about which names exist), or
a longer run from one address whatever the names, logging in from there is refused with 429
until a quiet window has passed since the last failure. A stranger's wrong passwords never
lock a real user out: the runs are counted per name *and* address, so the user's own
address still logs in.

The throttle is checked when a login arrives and again when its turn for one of the few
concurrent password checks comes (failures may have come in while it waited), so a burst
of parallel guesses gets at most a few more tries than the limit. The runs live in the
database (``login_failures``, fleet.accounts.tables), so every fleet worker counts the same
runs and a restart forgets nothing; a failure is counted by one atomic upsert, whichever
worker sees it, and runs whose window has passed are deleted as new failures come in.
Times are wall-clock (Unix seconds): the workers share them.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import case, delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.accounts.tables import LoginFailures
from fleet.core.settings import Settings
from fleet.errors import TooManyLogins
from fleet.ingest.upsert import upsert

NAME, ADDRESS = "name", "address"


@dataclass
class LoginThrottle:
    sessions: async_sessionmaker[AsyncSession]
    per_name: int
    per_address: int
    window: float  # seconds
    clock: Callable[[], float] = time.time

    @classmethod
    def from_settings(
        cls, settings: Settings, sessions: async_sessionmaker[AsyncSession]
    ) -> LoginThrottle:
        return cls(
            sessions,
            per_name=settings.login_failures_per_name,
            per_address=settings.login_failures_per_address,
            window=settings.login_failure_window.total_seconds(),
        )

    async def check(self, name: str, address: str) -> None:
        """TooManyLogins if ``name`` from ``address``, or ``address`` whatever the name, has
        had its run of failures and the window since the last one has not passed yet."""
        now = self.clock()
        async with self.sessions() as session:
            runs = {
                (kind, who): (count, last)
                for kind, who, count, last in await session.execute(
                    select(
                        LoginFailures.kind, LoginFailures.name, LoginFailures.count,
                        LoginFailures.last_s,
                    ).where(
                        LoginFailures.address == address,
                        LoginFailures.name.in_((name, "")),
                        LoginFailures.last_s > now - self.window,
                    )
                )
            }  # fmt: skip
        for key, limit, who in (
            ((NAME, name), self.per_name, f"for {name} from {address}"),
            ((ADDRESS, ""), self.per_address, f"from {address}"),
        ):
            count, last = runs.get(key, (0, now))
            if count >= limit:
                wait = max(1, math.ceil(last + self.window - now))
                raise TooManyLogins(f"too many failed logins {who}; try again in {wait} s", wait)

    async def failed(self, name: str, address: str) -> None:
        """One more failure in the runs of the name from the address and of the address (a
        run whose window had passed starts again at 1)."""
        now = self.clock()
        async with self.sessions.begin() as session:
            for kind, who in ((NAME, name), (ADDRESS, "")):
                insert = upsert(session, LoginFailures).values(
                    kind=kind, name=who, address=address, count=1, last_s=now
                )
                await session.execute(
                    insert.on_conflict_do_update(
                        index_elements=["kind", "name", "address"],
                        set_={
                            "count": case(
                                (insert.excluded.last_s - LoginFailures.last_s >= self.window, 1),
                                else_=LoginFailures.count + 1,
                            ),
                            "last_s": insert.excluded.last_s,
                        },
                    )
                )
            await session.execute(
                delete(LoginFailures).where(LoginFailures.last_s <= now - self.window)
            )

    async def succeeded(self, session: AsyncSession, name: str, address: str) -> None:
        """The right password: the run of failures of the name from that address ends (the
        address's goes on), in ``session``'s transaction (the one that logs the user in)."""
        await session.execute(
            delete(LoginFailures).where(
                LoginFailures.kind == NAME,
                LoginFailures.name == name,
                LoginFailures.address == address,
            )
        )


@dataclass
class LoginGuard:
    """One app's login throttle and its limit on concurrent argon2 checks."""

    throttle: LoginThrottle
    password_checks: asyncio.Semaphore

    @classmethod
    def from_settings(
        cls, settings: Settings, sessions: async_sessionmaker[AsyncSession]
    ) -> LoginGuard:
        return cls(
            LoginThrottle.from_settings(settings, sessions),
            asyncio.Semaphore(settings.password_checks),
        )

    @asynccontextmanager
    async def password_check(self, name: str, address: str) -> AsyncIterator[None]:
        """One of the limited password-check slots, the throttle checked once it is ours."""
        async with self.password_checks:
            await self.throttle.check(name, address)
            yield

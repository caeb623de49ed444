"""The configuration agent: desired version in, validated, applied in place, proven healthy,
committed or rolled back, reported.

For each desired version the fleet sends (``config/desired``, and after every reconnect the
answer to the gateway's ``config/request``):

1. the same (version, hash) as what runs, one already refused or rolled back, or one older
   than a version already handled: the report said again, nothing done (the retained copy and
   the answer to a request both arrive after a reconnect; versions only grow in the fleet);
2. the hash must match the document; when the gateway trusts a signing key
   (``state_dir/trusted-keys/``, the same keys as releases) the signature must be one of
   them over :func:`~gateway.wire.config.signed_statement` for this gateway and version
   (a gateway that trusts no key takes unsigned documents, and says so once); the document
   must pass ``gateway check``'s validator against this gateway's profiles, and change
   nothing that needs a restart: else ``rejected`` with the messages, nothing changed;
3. ``pending``: ``applying.json`` written, the document applied in place
   (:class:`~gateway.config.apply.InPlace`), the health window watched
   (:class:`~gateway.health_gate.HealthGate`, ``[apply] health_window_s``);
4. healthy: committed (:meth:`ConfigStore.commit`) and ``applied``; a version the fleet marked
   as weakening a standard interlock raises an info event when it is applied. Unhealthy, or
   the apply failed: the previous document applied back in place and ``rolled back`` with the
   reason. If the process dies in steps 3–4, it restarts on the old site file and reports
   ``rolled back`` (:meth:`ConfigAgent.started`).

While one is being applied, the desired versions that arrive wait; the newest is handled
next and the older ones dropped — unless the newest is refused for its signature, when the
next newest is tried (a forged offer cannot push a real one out).
Parsing and the state directory's writes (each fsync'd) run in a background thread, so the
control loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from gateway import wire
from gateway.config.apply import Changes, InPlace, restart_needed
from gateway.config.store import ConfigStore, Running
from gateway.control.alarms import Severity
from gateway.errors import ConfigError, KeyFileError, SignatureError, WireError
from gateway.health_gate import HealthGate, Verdict
from gateway.site import SiteConfig, parse_site
from gateway.trust import TRUSTED_KEYS_DIR, TrustedKeys
from gateway.wire.config import (
    ConfigRequest,
    DesiredConfig,
    ReportedConfig,
    Status,
    document_hash,
    signed_statement,
)

if TYPE_CHECKING:
    from gateway.runtime import Gateway
    from gateway.uplink.link import Uplink

log = logging.getLogger(__name__)

#: the health window: (the new site, what the apply changed, devices left as they were)
Watch = Callable[[SiteConfig, Changes, set[str]], Awaitable[Verdict]]


class ConfigAgent:
    """Desired configuration for one running gateway; ``async with`` it inside the gateway."""

    def __init__(
        self,
        gateway: Gateway,
        site_path: Path,
        site_text: str,
        state_dir: Path,
        *,
        interrupted: tuple[int, str] | None = None,
        in_place: InPlace | None = None,
        watch: Watch | None = None,
        on_fatal: Callable[[str], None] | None = None,
        trusted: Callable[[], TrustedKeys] | None = None,
    ) -> None:
        """``on_fatal(reason)``: the gateway cannot go back to its previous document in place
        (``gateway run`` then exits with a failure, and the service manager starts it again on
        the site file, which still holds that document); ``in_place`` and ``watch`` replace
        the real apply and health window (tests). ``trusted()``: the keys a document must be
        signed with, read again for every version (by default ``state_dir/trusted-keys/``, so
        a key added there counts without a restart)."""
        self.gateway = gateway
        self.site_path = site_path
        self.text = site_text  # the document that runs
        self.store = ConfigStore(state_dir, site_path)
        self.running: Running = self.store.running(site_text)
        self.report: ReportedConfig = self._startup_report(interrupted)
        #: the newest version handled that was authentic (a refused signature does not count:
        #: a forged high version must not make the gateway ignore the fleet's next ones)
        self.handled = max(self.store.handled(), _authentic_about(self.report))
        self.in_place: InPlace | None = None  # once the gateway runs
        self._given_in_place = in_place
        self._watch = watch or self._health_window
        self._on_fatal = on_fatal
        keys_dir = state_dir / TRUSTED_KEYS_DIR
        self._trusted = trusted or (lambda: TrustedKeys.load(keys_dir))
        self._said_unsigned = False
        gateway.before_uplink.append(self._register)
        #: offers not handled yet, by (version, hash): the newest is handled next
        self._offers: dict[tuple[int, str], DesiredConfig] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: every report made, in order (the last one is the standing report)
        self.reports: list[ReportedConfig] = [self.report]
        self.idle = asyncio.Event()
        self.idle.set()

    @classmethod
    def before_start(cls, state_dir: Path, site_path: Path) -> tuple[int, str] | None:
        """Call before the site file is read: finishes a commit the process died in; returns
        the (version, hash) of an apply it died in, if any (see :class:`ConfigStore`)."""
        return ConfigStore(state_dir, site_path).recover()

    def _startup_report(self, interrupted: tuple[int, str] | None) -> ReportedConfig:
        running = self.running
        last = self.store.last_report()
        if interrupted is None and last is not None and last.status == "pending":
            interrupted = (last.about or 0, "")  # died as the apply began
        if interrupted is not None:
            version, _ = interrupted
            report = self._make(
                "rolled back",
                about=version or None,
                reason=f"the gateway restarted during the apply of version {version} (before "
                "its health window ended): it runs the previous document",
            )
            log.warning("configuration: %s", report.reason)
            return report
        if last is not None and last.sha256 == running.sha256 and last.version == running.version:
            return last.model_copy(update={"at": time.time()})  # what it said, still true
        return self._make("applied", about=running.version)  # None: a local document

    def _make(
        self,
        status: Status,
        *,
        about: int | None,
        messages: list[str] | None = None,
        reason: str = "",
    ) -> ReportedConfig:
        return ReportedConfig(
            version=self.running.version,
            sha256=self.running.sha256,
            status=status,
            about=about,
            messages=(messages or [])[:200],
            reason=reason[:2000],
            at=time.time(),
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def _register(self, uplink: Uplink) -> None:
        uplink.inbox.handle(wire.Kind.CONFIG_DESIRED, self._on_desired)
        uplink.inbox.on_connect(self._ask)

    async def __aenter__(self) -> Self:
        """Enter once the gateway runs (``async with Gateway(...) as gw, agent``)."""
        self.in_place = await (self._given_in_place or InPlace(self.gateway)).__aenter__()
        await asyncio.to_thread(self._say_trust)
        await self._say(self.report)
        self._task = asyncio.create_task(self._work(), name="config-agent")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.in_place is not None:
            await self.in_place.__aexit__(exc_type, exc, tb)

    # -- inputs ------------------------------------------------------------------------------

    async def _on_desired(self, payload: bytes) -> None:
        try:
            desired = wire.decode(DesiredConfig, payload)
        except WireError as exc:
            log.warning("configuration: a desired version refused: %s", exc)
            return
        self.offer(desired)

    async def _ask(self) -> None:
        uplink = self.gateway.uplink
        if uplink is None:
            return
        request = ConfigRequest(
            version=self.running.version, sha256=self.running.sha256, at=time.time()
        )
        await uplink.inbox.send(wire.Kind.CONFIG_REQUEST, wire.encode(request))

    def offer(self, desired: DesiredConfig) -> None:
        """Handle ``desired`` next, unless a newer offer comes before it starts. Older offers
        are dropped once a newer one is handled — unless that one is refused for its
        signature: then the next newest is tried, so a forged offer cannot push a real one
        out."""
        self._offers[(desired.version, desired.sha256)] = desired
        for key in sorted(self._offers)[:-MAX_OFFERS]:
            del self._offers[key]
        self.idle.clear()
        self._wake.set()

    # -- the work ----------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._offers:
                desired = self._offers.pop(max(self._offers))
                try:
                    await self._handle(desired)
                except Exception:
                    log.exception("configuration: version %d failed", desired.version)
                if not (self.report.about == desired.version and _forged(self.report)):
                    self._offers = {k: v for k, v in self._offers.items() if k[0] > desired.version}
            self.idle.set()

    async def _handle(self, desired: DesiredConfig) -> None:
        if (desired.version, desired.sha256) == (self.running.version, self.running.sha256):
            if self.report.about != desired.version or self.report.status != "applied":
                await self._say(self._make("applied", about=desired.version))
            else:
                await self._say(self.report)
            return
        if desired.version <= self.handled:
            # refused or rolled back already (or older than one handled since): said again;
            # a new version is needed to try again
            await self._say(self.report)
            return
        if document_hash(desired.document) != desired.sha256:
            await self._reject(desired, ["sha256: the document does not have the hash sent"])
            return
        refused = await asyncio.to_thread(self._signature_problem, desired)
        if refused:
            await self._reject(desired, [refused])
            return
        try:
            new = await asyncio.to_thread(  # off the control loop: profiles are read from disk
                parse_site, desired.document, f"version {desired.version}", self.site_path.parent
            )
        except ConfigError as exc:
            await self._reject(desired, exc.problems)
            return
        problems = restart_needed(self.gateway.site, new)
        if problems:
            await self._reject(desired, problems)
            return
        await self._apply(desired, new)

    def _say_trust(self) -> None:
        """At start, one log line: which keys a configuration must be signed with."""
        try:
            trusted = self._trusted()
        except KeyFileError as exc:
            log.error("configuration: every version will be refused: %s", exc)
            return
        if trusted:
            log.info(
                "configuration: accepts versions signed by key(s) %s (%s)",
                ", ".join(sorted(trusted.keys)),
                trusted.source,
            )
        else:
            self._unsigned_accepted(trusted)

    def _unsigned_accepted(self, trusted: TrustedKeys) -> None:
        if not self._said_unsigned:
            self._said_unsigned = True
            log.warning(
                "configuration: this gateway trusts no signing key (%s is empty): it "
                "accepts unsigned configurations; add the fleet's public key there to "
                "refuse them",
                trusted.source or TRUSTED_KEYS_DIR,
            )

    def _signature_problem(self, desired: DesiredConfig) -> str:
        """Why ``desired`` is not signed as this gateway requires ("" when it is)."""
        try:
            trusted = self._trusted()
        except KeyFileError as exc:  # a bad key file: trust nothing less than intended
            return f"{SIGNATURE_REFUSED}cannot check it: {exc}"
        if not trusted:
            self._unsigned_accepted(trusted)
            return ""
        me = self.gateway.site.gateway
        statement = signed_statement(me.site, me.id, desired.version, desired.document)
        try:
            key = trusted.verify(statement, desired.signature or None)
        except SignatureError as exc:
            return SIGNATURE_REFUSED + _refusal(exc)
        log.info("configuration: version %d signed by key %s", desired.version, key)
        return ""

    async def _reject(self, desired: DesiredConfig, messages: list[str]) -> None:
        log.warning("configuration: version %d rejected: %s", desired.version, "; ".join(messages))
        await self._say(self._make("rejected", about=desired.version, messages=messages))

    async def _apply(self, desired: DesiredConfig, new: SiteConfig) -> None:
        gw = self.gateway
        assert self.in_place is not None
        old, old_text = gw.site, self.text
        await asyncio.to_thread(self.store.begin, desired.version, desired.sha256)
        await self._say(self._make("pending", about=desired.version))
        try:
            changes = await self.in_place.apply(new)
        except Exception as exc:  # ApplyError (a port), or anything half-way: roll back
            reason = f"the apply failed: {exc}"
            await self._roll_back(desired, old, reason)
            return
        log.info("configuration: version %d applied in place (%s)", desired.version, changes)
        unchanged = self.in_place.unchanged_devices(new) - set(changes.devices_added)
        verdict = await self._watch(new, changes, unchanged)
        if not verdict.healthy:
            await self._roll_back(desired, old, verdict.reason)
            return
        await asyncio.to_thread(self.store.commit, desired.version, desired.document, old_text)
        self.text = desired.document
        self.running = Running(desired.version, desired.sha256)
        if desired.safety_change:
            key = "config/safety-change"
            gw.alarms.raise_(
                key,
                Severity.INFO,
                "configuration",
                f"configuration version {desired.version} applied: it weakens or removes a "
                "standard interlock (confirmed in the fleet)",
            )
            gw.alarms.clear(key, by="configuration")
        await self._say(self._make("applied", about=desired.version))

    async def _health_window(
        self, new: SiteConfig, changes: Changes, unchanged: set[str]
    ) -> Verdict:
        gate = HealthGate(
            self.gateway,
            new.apply.health_window_s,
            skipped_allowed=new.apply.skipped_cycles_allowed,
        )
        return await gate.watch(changed_buses=changes.buses_reopened, unchanged_devices=unchanged)

    async def _roll_back(self, desired: DesiredConfig, old: SiteConfig, reason: str) -> None:
        assert self.in_place is not None
        log.warning("configuration: version %d rolled back: %s", desired.version, reason)
        try:
            await self.in_place.apply(old)
        except Exception as exc:  # the old site's ports: they were open a moment ago
            log.exception("configuration: going back to the previous document failed")
            reason += f"; going back in place failed too ({exc}): the gateway restarts on it"
            await asyncio.to_thread(self.store.abandon)
            await self._say(self._make("rolled back", about=desired.version, reason=reason))
            if self._on_fatal is not None:
                self._on_fatal(reason)
            raise
        await asyncio.to_thread(self.store.abandon)
        await self._say(self._make("rolled back", about=desired.version, reason=reason))

    async def _say(self, report: ReportedConfig) -> None:
        self.report = report
        if not self.reports or self.reports[-1] is not report:
            self.reports.append(report)
        handled = _authentic_about(report)
        if handled > self.handled:
            self.handled = handled
            await asyncio.to_thread(self.store.save_handled, handled)
        await asyncio.to_thread(self.store.save_report, report)  # fsync: off the loop
        uplink = self.gateway.uplink
        if uplink is not None:
            await uplink.inbox.report(wire.Kind.CONFIG_REPORTED, wire.encode(report))


def _forged(report: ReportedConfig) -> bool:
    """The report refuses the signature of the version it is about."""
    return report.status == "rejected" and any(
        m.startswith(SIGNATURE_REFUSED) for m in report.messages[:1]
    )


def _authentic_about(report: ReportedConfig) -> int:
    """The version a report is about, unless it refused that version's signature (0)."""
    return 0 if _forged(report) else report.about or 0


SIGNATURE_REFUSED = "signature: "
#: desired versions kept waiting while one is handled (the newest ones)
MAX_OFFERS = 8


def _refusal(exc: SignatureError) -> str:
    """A refused signature in the words a person reads in the fleet's status."""
    if exc.reason == "unsigned":
        return "unsigned: this gateway accepts only configurations signed by a key it trusts"
    if exc.reason == "unknown-key":
        return f"signed by an unknown key: {exc}"
    return f"bad signature: {exc}"

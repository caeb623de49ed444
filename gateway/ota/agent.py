"""The gateway's OTA agent: from an ``ota/command`` to a committed release or a rollback.

One update at a time, each step reported on ``ota/status`` (the inbox's standing report):

1. **downloading** — free disk space checked first, then the bundle fetched with resume
   and bounded retries (:mod:`gateway.ota.download`), progress in steps of 5 %;
2. **verifying** — size and SHA-256 of the download, then signature, platform, Python,
   version and every file (:func:`gateway.ota.bundle.open_bundle`), before anything is
   installed; a refusal is ``failed`` with the reason and nothing changes;
3. **installing** — the inactive slot built from the bundle's wheels at idle priority
   (:mod:`gateway.ota.slots`) while this version keeps running;
4. **waiting** — until a safe moment: no interlock active and no charger charging (each
   can be switched off), re-checked every few seconds, ``reason`` saying what it waits for;
   **flashing** — at that moment, each SIO-1 that runs another firmware than the release
   carries gets it (:mod:`gateway.ota.sio1`: the runtime lets go of the board, the copy of
   ``gateway flash``, the check that it answers the new version, the board claimed again),
   then the safe moment is waited for again; a failed copy leaves the old firmware and is
   reported (``sio1_firmware``), and stops the update only when the release needs a newer
   firmware than the board is left with (its manifest's ``firmware_min``);
5. **restarting** — the state file says the new slot is active and on trial, the
   ``current`` link is renamed, and the gateway exits for the supervisor to start it again
   through the launcher;
6. **checking** — the new version, started by the launcher, watches itself through the
   health window (:class:`gateway.health_gate.HealthGate`); healthy: **committed**;
   unhealthy: the previous slot is made active again (**rolled-back**, with the verdict's
   reason) and the gateway exits so the launcher starts it. A version that cannot even get
   this far is rolled back by the launcher's boot counter.

Every step persists the state first, so a ``kill -9`` at any point is followed by a start
that finishes the step (the download resumes, the install is redone, the wait goes on, an
interrupted firmware copy is finished at once) or rolls back. What is reported as running
is read at start: this process's version, the slot the launcher started and the SIO-1
firmware version the board answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Self

from gateway import wire
from gateway.errors import BundleRefused, GatewayError, OtaError, WireError
from gateway.flash.firmware import firmware_constant
from gateway.health_gate import HealthGate, Verdict
from gateway.image import Quality
from gateway.ota import sio1, slots
from gateway.ota.bundle import Expectation, open_bundle, this_platform, this_python
from gateway.ota.download import check_space, download
from gateway.ota.launcher import SLOT_ENV
from gateway.ota.pause import checkpoint
from gateway.ota.state import UpdateState, load, ota_dir, other, save
from gateway.state_files import write_atomic
from gateway.trust import TrustedKeys
from gateway.wire.ota import FINAL, OtaCommand, OtaState, OtaStatus, Running, Sio1Firmware

if TYPE_CHECKING:
    from gateway.control.safety_io import SafetyIo
    from gateway.runtime import Gateway
    from gateway.uplink.link import Uplink

log = logging.getLogger(__name__)

COMMAND_FILE = "command.json"
#: the states an update that a restart interrupted resumes from
RESUMABLE = frozenset({"downloading", "verifying", "installing", "waiting", "flashing"})
#: the states in which a newer command or a cancel stops the update (not in a firmware copy)
CANCELLABLE = RESUMABLE - {"flashing"}
#: after an install, the states that resume from the installed slot (no new download)
INSTALLED = frozenset({"waiting", "flashing"})
#: how long the agent waits for a board to answer its firmware version before judging it
READ_WITHIN_S = 15.0
#: how long an SIO-1 keeps its outputs across a planned restart, at most (its HR 5)
HOLD_S = 20
HOLD_FIRMWARE = 0x0101  # the first SIO-1 firmware with the hold (1.1)
HEARTBEAT_DRAIN_S = 0.3
#: EVSE points whose value means "a car is charging"
CHARGING = {"cp_state": {2, 3}, "charging_state": {7, 8}}


class OtaAgent:
    """Updates for one running gateway; ``async with`` it inside the gateway."""

    def __init__(
        self,
        gateway: Gateway,
        state_dir: Path,
        trusted: TrustedKeys,
        *,
        on_restart: Callable[[str], None],
        version: str,
        window_s: float = 60.0,
        defer_on_interlock: bool = True,
        defer_on_charging: bool = True,
        system_site_packages: bool = False,
        recheck_s: float = 5.0,
        watch: Callable[[], Awaitable[Verdict]] | None = None,
        sio1_repl: Mapping[str, str] | None = None,
    ) -> None:
        """``on_restart(reason)``: stop the gateway so the supervisor starts it again;
        ``version``: the running version; ``watch``: replaces the health window (tests);
        ``sio1_repl``: each SIO-1's REPL port by device name (its firmware is installed
        only on the boards named here)."""
        self.gateway = gateway
        self.state_dir = state_dir
        self.dir = ota_dir(state_dir)
        self.trusted = trusted
        self.on_restart = on_restart
        self.version = version
        self.window_s = window_s
        self.defer_on_interlock = defer_on_interlock
        self.defer_on_charging = defer_on_charging
        self.system_site_packages = system_site_packages
        self.recheck_s = recheck_s
        self._watch = watch or self._health_window
        self.sio1_repl = dict(sio1_repl or {})
        self._verified: dict[str, int] = {}  # SIO-1 firmware checked by this process (IR 1)
        slot = os.environ.get(SLOT_ENV, "none")
        self.slot: Literal["a", "b", "none"] = (
            "a" if slot == "a" else "b" if slot == "b" else "none"
        )
        try:
            self.state: UpdateState = load(state_dir)
        except OtaError as exc:  # never keep the gateway from running: start over, say why
            log.error("ota: %s", exc)
            self.state = UpdateState(
                active=slots.current(state_dir), state="failed", reason=str(exc)
            )
        self._task: asyncio.Task[None] | None = None
        self._last_progress = -1.0
        self.reports: list[OtaStatus] = []
        gateway.before_uplink.append(self._register)

    def _register(self, uplink: Uplink) -> None:
        uplink.inbox.handle(wire.Kind.OTA_COMMAND, self._on_command)

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        supervisor = getattr(self.gateway, "supervisor", None)
        boards = {sio.device for sio in getattr(supervisor, "safety_ios", ())}
        for device in sorted(set(self.sio1_repl) - boards):
            log.error(
                "ota: --ota-sio1-repl %s=%s: the site has no SIO-1 named %r (SIO-1s: %s)",
                device, self.sio1_repl[device], device, ", ".join(sorted(boards)) or "none",
            )  # fmt: skip
        s = self.state
        if s.trial and s.active == self.slot:
            self._task = asyncio.create_task(self._check(), name="ota-check")
        elif s.state in RESUMABLE and (command := self._saved_command()) is not None:
            log.warning("ota: the gateway restarted while %s; resuming", s.state)
            resume = s.state if s.state in INSTALLED else None
            self._task = asyncio.create_task(self._update(command, resume), name="ota-update")
        elif s.state == "restarting" and not s.trial:
            await self._set(OtaState.FAILED, "the restart into the new release did not happen")
        else:
            await self._say()
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

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- commands ------------------------------------------------------------------------------

    async def _on_command(self, payload: bytes) -> None:
        try:
            command = wire.decode(OtaCommand, payload)
        except WireError as exc:
            log.warning("ota: command refused: %s", exc)
            return
        await self.command(command)

    async def command(self, command: OtaCommand) -> None:
        if command.id <= self.state.handled:
            return  # the retained copy of a command already acted on
        if self.busy and self.state.state not in CANCELLABLE and command.action == "install":
            # flashing, restarting or checking: not taken now, so not marked handled; the
            # fleet sends it again when this gateway's status shows it is still about the
            # older one
            log.warning("ota: command %d not taken while %s", command.id, self.state.state)
            return
        self.state.handled = command.id
        if command.action == "cancel":
            if self.busy and self.state.state in CANCELLABLE:
                assert self._task is not None
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                await self._set(OtaState.CANCELLED, "cancelled by the fleet", about=command)
            else:
                save(self.state_dir, self.state)
            return
        if self._task is not None and not self._task.done():
            self._task.cancel()  # a newer release replaces one not yet installed
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        write_atomic(self.dir / COMMAND_FILE, command.model_dump_json().encode())
        self.state.installed, self.state.sio1, self.state.firmware_min = None, [], None
        self._task = asyncio.create_task(self._update(command), name="ota-update")

    def _saved_command(self) -> OtaCommand | None:
        try:
            return OtaCommand.model_validate_json((self.dir / COMMAND_FILE).read_bytes())
        except (OSError, ValueError):
            return None

    # -- the update ------------------------------------------------------------------------------

    async def _update(self, command: OtaCommand, resume: str | None = None) -> None:
        try:
            await self._steps(command, resume)
        except asyncio.CancelledError:
            raise
        except BundleRefused as exc:
            await self._set(OtaState.FAILED, f"bundle refused ({exc.reason}): {exc}", about=command)
        except GatewayError as exc:
            await self._set(OtaState.FAILED, str(exc), about=command)
        except Exception as exc:
            log.exception("ota: update %d failed", command.id)
            await self._set(OtaState.FAILED, f"unexpected error: {exc}", about=command)

    async def _steps(self, command: OtaCommand, resume: str | None) -> None:
        """``resume``: the state a restart interrupted, when it came after the install."""
        target = self._installed(command) if resume is not None else None
        if target is None:
            target = await self._fetch_and_install(command)
            if target is None:
                return
        else:
            log.warning("ota: release %s is installed in slot %s already", command.release, target)
        release = self.state.versions[target]
        if resume != "flashing":  # an interrupted copy is finished at once (the board may
            await self._until_safe(command)  # wait in maintenance mode, relays off)
        if await self._sio1_firmware(command, target, finish=resume == "flashing"):
            await self._until_safe(command)  # what the copy made active stands down first
        s = self.state
        s.previous = s.active if s.active is not None else None
        s.active, s.trial, s.boots, s.installed = target, True, 0, None
        await self._set(
            OtaState.RESTARTING, f"into release {release} (slot {target})", about=command
        )
        await checkpoint("switching")
        slots.switch(self.state_dir, target)
        await self.hold_safety_ios()
        await checkpoint("restarting")
        self.on_restart(f"restarting into release {release}")

    async def _fetch_and_install(self, command: OtaCommand) -> Literal["a", "b"] | None:
        """Download, verify and install into the inactive slot: the slot, or None when the
        release runs already (reported as committed)."""
        await self._set(OtaState.DOWNLOADING, "", about=command, progress=0.0)
        await checkpoint("downloading")
        downloads = self.dir / "downloads"
        downloads.mkdir(exist_ok=True, mode=0o700)
        check_space(self.dir, command.size * 3)  # the bundle, its unpacked files, the venv

        def progress(done: int) -> None:
            share = done / command.size if command.size else 1.0
            if share - self._last_progress >= 0.05 or done == command.size:
                self._last_progress = share
                asyncio.run_coroutine_threadsafe(
                    self._set(OtaState.DOWNLOADING, "", about=command, progress=min(share, 1.0)),
                    loop,
                )

        loop = asyncio.get_running_loop()
        self._last_progress = -1.0
        path, transfer = await download(
            command.url, command.token, command.size, command.sha256, downloads, progress=progress
        )
        log.info("ota: downloaded %s (%d bytes over the network)", path, transfer.received)
        await self._set(OtaState.VERIFYING, "", about=command)
        await checkpoint("verifying")
        staging = self.dir / "staging"
        expect = Expectation(this_platform(), this_python(), self.version, command.force)
        try:
            opened = await asyncio.to_thread(open_bundle, path, self.trusted, expect, staging)
        finally:
            path.unlink(missing_ok=True)  # verified files are in staging now, or refused
        release = opened.manifest.version
        if release == self.version and not command.force:
            await asyncio.to_thread(shutil.rmtree, staging, True)
            await self._set(OtaState.COMMITTED, f"release {release} already runs", about=command)
            return None
        target = other(self.state.active) if self.state.active else "a"
        if self.slot == target:  # never overwrite what runs (started outside the launcher)
            target = other(target)
        await self._set(OtaState.INSTALLING, f"into slot {target}", about=command)
        await checkpoint("installing")
        await slots.install(
            self.state_dir,
            target,
            staging,
            release,
            system_site_packages=self.system_site_packages,
        )
        await asyncio.to_thread(shutil.rmtree, staging, True)
        self.state.versions[target] = release
        self.state.installed = target
        self.state.firmware_min = opened.manifest.firmware_min
        save(self.state_dir, self.state)
        return target

    def _installed(self, command: OtaCommand) -> Literal["a", "b"] | None:
        """The slot this command's release was installed into before a restart, if whole."""
        slot = self.state.installed
        if slot is None or self.state.command != command.id:
            return None
        version = self.state.versions.get(slot)
        try:
            written = (slots.slot_dir(self.state_dir, slot) / "VERSION").read_text().strip()
        except OSError:
            return None
        return slot if version is not None and written == version else None

    async def _until_safe(self, command: OtaCommand) -> None:
        while (reason := self.unsafe()) is not None:
            if self.state.state != "waiting" or self.state.reason != reason:
                await self._set(OtaState.WAITING, reason, about=command)
            await asyncio.sleep(self.recheck_s)

    # -- the SIO-1 firmware ----------------------------------------------------------------------

    async def _sio1_firmware(self, command: OtaCommand, target: Literal["a", "b"], *,
                             finish: bool) -> bool:  # fmt: skip
        """Bring every SIO-1 to the firmware the release carries; whether a board was
        touched. ``finish``: a copy a restart interrupted (install whatever the board
        says). OtaError when the release needs a newer firmware than a board is left with."""
        sources = slots.slot_dir(self.state_dir, target) / "firmware"
        carried = sio1.carried_version(sources)
        supervisor = getattr(self.gateway, "supervisor", None)
        boards = list(getattr(supervisor, "safety_ios", ()))
        if carried is None or not boards:
            return False
        results, touched = [], False
        for sio in boards:
            # a board whose copy a restart interrupted may be in maintenance, silent
            running = await self._board_version(sio.device, 2.0 if finish else READ_WITHIN_S)
            result: Sio1Firmware
            if running == carried and not finish:
                result = Sio1Firmware(
                    device=sio.device, carried=carried, running=running, result="current"
                )
            elif running is None and not finish:
                reason = "the board does not answer its firmware version"
                result = Sio1Firmware(
                    device=sio.device, carried=carried, result="skipped", reason=reason
                )
            elif isinstance(board := sio1.board_of(self.gateway, sio, self.sio1_repl), str):
                result = Sio1Firmware(
                    device=sio.device, carried=carried, running=running, result="skipped",
                    reason=board,
                )  # fmt: skip
            else:
                touched = True
                result = await self._flash(command, sio, board, sources, carried, running)
            results.append(result)
            self.state.sio1 = [*results]
            save(self.state_dir, self.state)
        await self._say()
        needed = self.state.firmware_min
        for result in results:
            left = result.running
            if needed is not None and (left is None or sio1.older(left, needed)):
                why = f" ({result.reason})" if result.reason else ""
                raise OtaError(
                    f"release {command.release} needs SIO-1 firmware {needed} or later and "
                    f"{result.device} runs {left or 'an unknown version'}{why}; "
                    "the gateway stays on the running release"
                )
        return touched

    async def _flash(
        self,
        command: OtaCommand,
        sio: SafetyIo,
        board: sio1.Board,
        sources: Path,
        carried: str,
        running: str | None,
    ) -> Sio1Firmware:
        was = running or "an unknown firmware"
        await self._set(
            OtaState.FLASHING,
            f"{sio.device}: SIO-1 firmware {was} → {carried} (relays off until it is claimed "
            "again)",
            about=command,
        )
        await checkpoint("flashing")
        async with sio1.released(self.gateway, sio):
            try:
                summary = await sio1.flash(board, sources)
            except GatewayError as exc:
                log.error("ota: SIO-1 firmware not installed on %s: %s", sio.device, exc)
                return Sio1Firmware(
                    device=sio.device, carried=carried, running=running, result="failed",
                    reason=f"{exc}"[:500],
                )  # fmt: skip
        major, _, minor = carried.partition(".")
        self._verified[sio.device] = int(major) << 8 | int(minor)
        self.state.firmware = carried
        log.info("ota: %s", summary)
        await self._reclaimed(sio)
        return Sio1Firmware(device=sio.device, carried=carried, running=carried, result="installed")

    async def _board_version(self, device: str, within: float) -> str | None:
        """The firmware version ``device`` answers (waiting up to ``within`` for a read)."""
        deadline = time.monotonic() + within
        raw = self._board_firmware(device)
        while raw is None and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            raw = self._board_firmware(device)
        return None if raw is None else sio1.version_text(raw)

    def _board_firmware(self, device: str) -> int | None:
        """IR 1 of ``device`` as read now, or as checked after this process installed it."""
        raw = self.gateway.image.reading(device, "fw_version")
        if isinstance(raw, int) and raw > 0:
            return raw
        return self._verified.get(device)

    async def _reclaimed(self, sio: SafetyIo) -> None:
        """Wait (bounded) until the runtime holds the board's claim again."""
        deadline = time.monotonic() + sio1.RECLAIM_WITHIN_S
        while time.monotonic() < deadline:
            if sio.claimed and self.gateway.image.reading(sio.device, "state") == 1:
                return
            await asyncio.sleep(0.1)
        log.warning("ota: %s not claimed again within %g s", sio.device, sio1.RECLAIM_WITHIN_S)

    async def hold_safety_ios(self) -> None:
        """Ask every claimed SIO-1 (firmware 1.1 or later) to keep its outputs across the
        restart (docs/safety.md#planned-restarts-for-updates): its heartbeats stop first, so
        that the hold is the last thing the board hears from this process. A board that
        refuses (its fire loop or e-stop open) or has older firmware goes to FAILSAFE after
        its timeout as in any restart."""
        supervisor = getattr(self.gateway, "supervisor", None)
        keeper = getattr(self.gateway, "keeper", None)
        boards = [s for s in getattr(supervisor, "safety_ios", ()) if s.claimed]
        for sio in boards:
            if keeper is not None:
                sio1.silence(self.gateway, sio.device)
        if boards:
            await asyncio.sleep(HEARTBEAT_DRAIN_S)  # a heartbeat already queued lands first
        for sio in boards:
            firmware = self._board_firmware(sio.device)
            if firmware is None or firmware < HOLD_FIRMWARE:
                log.warning(
                    "ota: %s has no hold (firmware %s): it fails safe", sio.device, firmware
                )
                continue
            try:
                await self.gateway.commands.write(sio.device, "hold", HOLD_S)
            except GatewayError as exc:
                log.warning("ota: %s refused the hold (%s): it fails safe", sio.device, exc)
            else:
                log.info("ota: %s holds its outputs for at most %d s", sio.device, HOLD_S)

    def unsafe(self) -> str | None:
        """Why now is not a moment to restart; None when it is."""
        gw = self.gateway
        if self.defer_on_interlock:
            engine = getattr(gw, "engine", None)
            active = sorted(n for n, r in getattr(engine, "rules", {}).items() if r.active)
            if active:
                return f"interlock {', '.join(active)} active"
        if self.defer_on_charging:
            for device, point, sample in gw.image.points():
                if sample.value in CHARGING.get(point, ()):
                    return f"{device} is charging"
        return None

    # -- after the restart ---------------------------------------------------------------------

    async def _check(self) -> None:
        s = self.state
        release = s.versions.get(self.slot, self.version)
        await self._set(
            OtaState.CHECKING, f"release {release} must stay healthy for {self.window_s:g} s"
        )
        await checkpoint("checking")
        verdict = await self._watch()
        if verdict.healthy:
            await checkpoint("committing")
            s.trial, s.boots = False, 0
            await self._set(OtaState.COMMITTED, self._firmware_note())
            with contextlib.suppress(OSError):
                (self.dir / COMMAND_FILE).unlink()
            return
        back = s.previous
        if back is None:  # the first release on a gateway that ran from its installation
            s.trial, s.boots = False, 0
            await self._set(
                OtaState.FAILED, f"release {release} is {verdict}; no slot to return to"
            )
            return
        s.active, s.previous, s.trial, s.boots = back, None, False, 0
        await self._set(
            OtaState.ROLLED_BACK,
            f"release {release} was {verdict}; back to {s.versions.get(back, '?')}",
        )
        slots.switch(self.state_dir, back)
        await self.hold_safety_ios()
        self.on_restart(f"rolling back from release {release}")

    def _firmware_note(self) -> str:
        """What a person must know of the SIO-1 firmware the committed release carries: the
        agent does not flash the board yet, so a different version is said, with the way."""
        if self.slot == "none":
            return ""
        carried = slots.slot_dir(self.state_dir, self.slot) / "firmware"
        if not (carried / "version.py").is_file():
            return ""
        try:
            version = firmware_constant(carried, "version", "VERSION")
        except GatewayError:
            return ""
        if not isinstance(version, tuple) or len(version) != 2:
            return ""
        carried_version = f"{version[0]}.{version[1]}"
        running = self._firmware()
        if running is None or running == carried_version:
            return ""
        return (
            f"the SIO-1 runs firmware {running}, this release carries {carried_version}: "
            f"flash it in a maintenance window (gateway flash --firmware {carried})"
        )

    async def _health_window(self) -> Verdict:
        return await HealthGate(self.gateway, self.window_s, skipped_allowed=2).watch()

    # -- reporting -------------------------------------------------------------------------------

    async def _set(
        self,
        state: OtaState,
        reason: str,
        *,
        about: OtaCommand | None = None,
        progress: float | None = None,
    ) -> None:
        s = self.state
        if about is not None:
            s.command, s.release = about.id, about.release
        s.state, s.reason = state.value, reason
        save(self.state_dir, s)
        if state in FINAL or state is OtaState.WAITING:
            log.info("ota: %s %s", state.value, reason)
        await self._say(progress)

    async def _say(self, progress: float | None = None) -> None:
        s = self.state
        status = OtaStatus(
            command=s.command,
            release=s.release,
            state=OtaState(s.state),
            progress=progress,
            reason=s.reason[:1000],
            running=Running(version=self.version, slot=self.slot, firmware=self._firmware()),
            previous=s.versions.get(s.previous) if s.previous else None,
            at=time.time(),
            sio1_firmware=s.sio1,
        )
        self.reports.append(status)
        uplink = self.gateway.uplink
        if uplink is not None:
            await uplink.inbox.report(wire.Kind.OTA_STATUS, wire.encode(status))

    def _firmware(self) -> str | None:
        """The SIO-1's firmware version as the board last answered (major.minor)."""
        for device, point, sample in self.gateway.image.points():
            if device in self._verified and point == "fw_version":
                value = sample.value if sample.quality is Quality.GOOD else self._verified[device]
                self.state.firmware = sio1.version_text(value) if isinstance(value, int) else None
                return self.state.firmware
            if point == "fw_version" and isinstance(sample.value, int) and sample.value > 0:
                version = f"{sample.value >> 8}.{sample.value & 0xFF}"
                self.state.firmware = version
                log.debug("ota: %s runs SIO-1 firmware %s", device, version)
                return version
        return self.state.firmware


def trusted_keys(state_dir: Path) -> TrustedKeys:
    """The keys this gateway trusts: ``state_dir/trusted-keys/*.pub``."""
    return TrustedKeys.load(state_dir / "trusted-keys")

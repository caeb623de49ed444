"""Over-the-air updates on the wire: the fleet's ``ota/command`` and the gateway's ``ota/status``.

``ota/command`` (fleet → gateway, retained, QoS 1): install one release, or cancel. Commands
are numbered per fleet (``id``, increasing); a gateway acts on a command id once, so the
retained copy it sees again after every reconnect changes nothing. The bundle is fetched
over HTTP(S) from ``url`` with ``token`` as a bearer token (minted for this gateway and
command, valid only for this bundle), and must be ``size`` bytes with SHA-256 ``sha256``
before its signature and files are even looked at.

``ota/status`` (gateway → fleet, the gateway's standing report, retained): where the update
of ``command`` stands — ``state``, ``progress`` (0..1 while downloading or installing),
``reason`` (the sentence a person reads: why it waits, failed or rolled back) — and, after
every start, what actually runs (:class:`Running`), never what the gateway was told to run,
and what became of the release's SIO-1 firmware on each board (:class:`Sio1Firmware`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.wire import Payload

ReleaseVersion = Annotated[str, Field(pattern=r"^\d+(\.\d+){0,3}$", max_length=32)]


class OtaState(StrEnum):
    """Where an update stands. The last four are final for their command."""

    IDLE = "idle"  # no update asked for since this gateway started keeping state
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    INSTALLING = "installing"
    WAITING = "waiting"  # installed; the restart waits for a safe moment (reason says which)
    FLASHING = "flashing"  # at that moment: the SIO-1 gets the release's firmware first
    RESTARTING = "restarting"
    CHECKING = "checking"  # the new version runs and must prove itself within the window
    COMMITTED = "committed"
    ROLLED_BACK = "rolled-back"  # back on the previous slot by itself; reason says why
    FAILED = "failed"  # nothing changed; reason says why
    CANCELLED = "cancelled"


FINAL = frozenset({OtaState.COMMITTED, OtaState.ROLLED_BACK, OtaState.FAILED, OtaState.CANCELLED})


class OtaCommand(Payload):
    """Install ``release`` (or cancel the update in progress)."""

    id: int = Field(ge=1)
    action: Literal["install", "cancel"] = "install"
    release: ReleaseVersion
    url: str = Field(max_length=2048)
    token: str = Field(default="", max_length=256)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    force: bool = False  # a downgrade, asked for by an operator and audited in the fleet
    at: float


class Running(BaseModel):
    """What runs on the gateway, as it found itself at its last start."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str  # the gateway's own version ("" when not installed as a package)
    slot: Literal["a", "b", "none"]  # "none": not started by the launcher (development)
    firmware: str | None = None  # the SIO-1's firmware version as the board answers; None unknown


class Sio1Firmware(BaseModel):
    """What became of the SIO-1 firmware a release carries (``device``: the board's name).

    ``result``: ``current`` (the board already runs it), ``installed`` (copied, the board
    restarted and answers the new version), ``failed`` (the board kept ``running``; ``reason``
    says why), ``skipped`` (not attempted; ``reason`` says why: no REPL port given, the board
    does not answer)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = Field(max_length=64)
    carried: str = Field(max_length=16)  # the version the release carries
    running: str | None = Field(default=None, max_length=16)  # as the board answers after
    result: Literal["current", "installed", "failed", "skipped"]
    reason: str = Field(default="", max_length=500)


class OtaStatus(Payload):
    """The gateway's standing report about updates."""

    command: int | None = None  # the command this is about (None before any)
    release: str | None = None  # the release that command asked for
    state: OtaState
    progress: float | None = Field(default=None, ge=0, le=1)
    reason: str = Field(default="", max_length=1000)
    running: Running
    previous: str | None = None  # the version the gateway would return to (rollback target)
    at: float
    #: the SIO-1 firmware step of this command's release (absent before it ran, or when the
    #: release carries no firmware or the site has no SIO-1)
    sio1_firmware: list[Sio1Firmware] = Field(default_factory=list, max_length=8)

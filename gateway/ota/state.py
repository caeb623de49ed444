"""The update state the launcher and the OTA agent share: ``state_dir/ota/state.json``.

Written atomically (temp file, fsync, rename, fsync of the directory), 0600 in a 0700
directory, so a ``kill -9`` or a power cut at any instant leaves either the old or the new
state, never half of one. It says which slot is active and which one to return to, whether
the active slot is on trial (installed, not yet proven healthy), how many times the launcher
started it without a commit, and the update's last reported state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import OtaError
from gateway.state_files import write_atomic
from gateway.wire.ota import Sio1Firmware

SlotName = Literal["a", "b"]
STATE_FILE = "state.json"
DEFAULT_MAX_BOOTS = 3


def other(slot: SlotName) -> SlotName:
    return "b" if slot == "a" else "a"


class UpdateState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    active: SlotName | None = None  # the slot the launcher starts (None: not installed yet)
    previous: SlotName | None = None  # the slot to return to while ``trial``
    versions: dict[str, str] = Field(default_factory=dict)  # slot → version installed
    trial: bool = False  # ``active`` has not proven itself yet
    boots: int = 0  # starts of ``active`` while on trial
    max_boots: int = DEFAULT_MAX_BOOTS
    handled: int = 0  # the highest command id acted on (a retained command seen again: no-op)
    command: int | None = None
    release: str | None = None
    state: str = "idle"
    reason: str = ""
    firmware: str | None = None  # the SIO-1 firmware version last read from the board
    installed: SlotName | None = None  # the slot built for ``command``, not switched to yet
    firmware_min: str | None = None  # the oldest SIO-1 firmware that release works with
    sio1: list[Sio1Firmware] = Field(default_factory=list)  # the firmware step of ``command``


def ota_dir(state_dir: Path) -> Path:
    directory = state_dir / "ota"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory


def load(state_dir: Path) -> UpdateState:
    path = ota_dir(state_dir) / STATE_FILE
    try:
        return UpdateState.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return UpdateState()
    except (ValidationError, ValueError) as exc:
        raise OtaError(f"{path}: unreadable update state ({exc}); remove it to reset") from None


def save(state_dir: Path, state: UpdateState) -> None:
    write_atomic(ota_dir(state_dir) / STATE_FILE, json.dumps(state.model_dump(), indent=1).encode())

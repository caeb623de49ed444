"""The gateway's configuration state on disk, in ``state_dir/config/`` (0700, files 0600).

* ``committed.json`` — the version and hash of the last document from the fleet the gateway
  committed, and the one before; ``current.toml`` and ``previous.toml`` their texts;
* ``applying.json`` — written before an apply starts, removed when it is committed or rolled
  back: found at start, it says the process died during an apply or its health window;
* ``report.json`` — the last report, said again after a restart;
* ``handled.json`` — the newest authentic version handled (applied, refused or rolled back):
  older ones are ignored, so an old signed version replayed cannot take the gateway back.

The site file itself (``gateway run --config``) is what the gateway runs at start. A commit
writes ``committed.json`` (the commit point) and then replaces the site file; a process that
dies before the commit point restarts on the old site file in full, one that dies after it
finishes the commit at start (:meth:`ConfigStore.recover`). Every write is atomic: a temp
file, fsync, rename, fsync of the directory.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.state_files import write_atomic
from gateway.wire.config import ReportedConfig, document_hash


@dataclass(frozen=True)
class Running:
    """What the gateway runs: the fleet's version and hash, or a local document (None)."""

    version: int | None
    sha256: str


class ConfigStore:
    def __init__(self, state_dir: Path, site_path: Path) -> None:
        self.dir = state_dir / "config"
        self.site_path = site_path
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(OSError):
            self.dir.chmod(0o700)

    # -- reading ---------------------------------------------------------------------------

    def _json(self, name: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.dir / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def committed(self) -> Running | None:
        data = self._json("committed.json")
        if data is None:
            return None
        return Running(data.get("version"), str(data.get("sha256", "")))

    def previous_text(self) -> str | None:
        try:
            return (self.dir / "previous.toml").read_text(encoding="utf-8")
        except OSError:
            return None

    def last_report(self) -> ReportedConfig | None:
        data = self._json("report.json")
        try:
            return None if data is None else ReportedConfig.model_validate(data)
        except ValueError:
            return None

    def running(self, site_text: str) -> Running:
        """Which version the site file is: the committed one, or a local document."""
        sha = document_hash(site_text)
        committed = self.committed()
        if committed is not None and committed.sha256 == sha:
            return committed
        return Running(None, sha)

    # -- the apply's steps -------------------------------------------------------------------

    def begin(self, version: int, sha256: str) -> None:
        write_atomic(
            self.dir / "applying.json", json.dumps({"version": version, "sha256": sha256}).encode()
        )

    def commit(self, version: int, text: str, old_text: str) -> None:
        """``text`` (version ``version``) becomes the gateway's own; the old one is kept."""
        old = self.committed()
        write_atomic(self.dir / "previous.toml", old_text.encode())
        write_atomic(self.dir / "current.toml", text.encode())
        write_atomic(
            self.dir / "committed.json",
            json.dumps(
                {
                    "version": version,
                    "sha256": document_hash(text),
                    "previous": None
                    if old is None
                    else {"version": old.version, "sha256": old.sha256},
                }
            ).encode(),
        )  # the commit point
        self._site_file(text)
        (self.dir / "applying.json").unlink(missing_ok=True)

    def abandon(self) -> None:
        """The apply ended without a commit (rejected or rolled back)."""
        (self.dir / "applying.json").unlink(missing_ok=True)

    def handled(self) -> int:
        data = self._json("handled.json")
        version = None if data is None else data.get("version")
        return version if isinstance(version, int) else 0

    def save_handled(self, version: int) -> None:
        write_atomic(self.dir / "handled.json", json.dumps({"version": version}).encode())

    def save_report(self, report: ReportedConfig) -> None:
        write_atomic(self.dir / "report.json", report.model_dump_json().encode())

    def recover(self) -> tuple[int, str] | None:
        """At start, before the site file is read: finish a commit the process died in, or
        say which apply it died in (version, hash) — the site file is then still the old
        document, run in full."""
        applying = self._json("applying.json")
        if applying is None:
            return None
        committed = self.committed()
        if committed is not None and committed.sha256 == applying.get("sha256"):
            with contextlib.suppress(OSError):
                self._site_file((self.dir / "current.toml").read_text(encoding="utf-8"))
            self.abandon()
            return None
        self.abandon()
        return int(applying.get("version") or 0), str(applying.get("sha256", ""))

    def _site_file(self, text: str) -> None:
        mode = 0o600
        with contextlib.suppress(OSError):
            mode = self.site_path.stat().st_mode & 0o777
        write_atomic(self.site_path, text.encode(), mode)

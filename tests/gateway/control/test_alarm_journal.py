"""The alarm journal written behind: raising an alarm never waits for the disk (an fsync
can take a second on a busy SD card), and what was raised lands in the journal, in order."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from gateway.control import alarms
from gateway.control.alarms import AlarmLog, Severity, read_journal


def test_raising_does_not_wait_for_the_disk_and_the_journal_keeps_the_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk_free = threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        # the disk answers only once the control loop has raised its alarms meanwhile
        assert disk_free.wait(10), "the raise waited for the disk"
        real_fsync(fd)

    monkeypatch.setattr(alarms.os, "fsync", slow_fsync)
    log = AlarmLog(tmp_path / "alarms.jsonl", write_behind=True)
    listened: list[str] = []
    log.listeners.append(lambda e: listened.append(e.key))
    log.raise_("fire-alarm/critical", Severity.CRITICAL, "fire-alarm", "FIRE ALARM")
    log.raise_("comm-loss/sio", Severity.MINOR, "comm-loss", "sio not answering")
    log.clear("comm-loss/sio")
    assert listened == ["fire-alarm/critical", "comm-loss/sio", "comm-loss/sio"]
    assert list(log.active) == ["fire-alarm/critical"]
    disk_free.set()
    log.close()
    journal = [(e.kind, e.key) for e in read_journal(tmp_path / "alarms.jsonl")]
    assert journal == [
        ("raised", "fire-alarm/critical"),
        ("raised", "comm-loss/sio"),
        ("cleared", "comm-loss/sio"),
    ]
    assert list(AlarmLog(tmp_path / "alarms.jsonl").active) == ["fire-alarm/critical"]

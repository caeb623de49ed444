"""The configuration state on disk: a process that dies after the commit point finishes the
commit at its next start, one that dies before it starts on the old document, and the files
are the gateway's alone (0700, 0600)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gateway.config.store import ConfigStore
from gateway.wire.config import document_hash

OLD, NEW = "old = 1\n", "new = 2\n"


class Died(Exception):
    pass


def test_dying_after_the_commit_point_finishes_the_commit_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site.toml"
    site.write_text(OLD)
    store = ConfigStore(tmp_path / "state", site)
    store.begin(7, document_hash(NEW))

    def die(text: str) -> None:
        raise Died  # after committed.json, before the site file

    monkeypatch.setattr(store, "_site_file", die)
    with pytest.raises(Died):
        store.commit(7, NEW, OLD)
    assert site.read_text() == OLD

    again = ConfigStore(tmp_path / "state", site)
    assert again.recover() is None  # nothing interrupted: the commit is finished
    assert site.read_text() == NEW
    assert again.running(NEW).version == 7
    assert (tmp_path / "state" / "config" / "previous.toml").read_text() == OLD


def test_dying_before_the_commit_point_starts_on_the_old_document(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(OLD)
    store = ConfigStore(tmp_path / "state", site)
    store.begin(7, document_hash(NEW))
    again = ConfigStore(tmp_path / "state", site)
    assert again.recover() == (7, document_hash(NEW))
    assert site.read_text() == OLD
    assert again.running(OLD).version is None  # never committed from the fleet: local
    assert again.recover() is None  # said once


def test_the_state_is_the_gateways_alone(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(OLD)
    store = ConfigStore(tmp_path / "state", site)
    store.begin(1, document_hash(NEW))
    store.commit(1, NEW, OLD)
    directory = tmp_path / "state" / "config"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert sorted(p.name for p in directory.iterdir()) == [
        "committed.json",
        "current.toml",
        "previous.toml",
    ]

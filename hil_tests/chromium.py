"""Debian's headless chromium for the screen tests: where it is, how it is started, and what
counts as a broken page (a script error, or anything the server's Content-Security-Policy
refused — an inline handler or style that silently does nothing for a real person)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MISSING = "needs Debian's chromium: sudo apt-get install chromium (make test installs it as root)"


def binary() -> str:
    """The chromium to launch; skips (fails under ``CI=true``) when it is not installed."""
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        if os.environ.get("CI") == "true":
            pytest.fail(f"chromium is missing under CI: {MISSING}")
        pytest.skip(MISSING)
    return CHROMIUM


def watch(page: Any, errors: list[str]) -> None:
    """Append to ``errors`` every script error of ``page`` and every policy refusal."""
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
    )

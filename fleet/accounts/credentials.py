"""The secrets the fleet hands out (login session cookies, API tokens): random, shown to
their holder once, and stored only as their SHA-256."""

from __future__ import annotations

import hashlib
import secrets


def new_secret(prefix: str = "") -> str:
    """A fresh secret of 256 random bits, URL-safe, after ``prefix``."""
    return prefix + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """What is stored of a session or token secret: its SHA-256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()

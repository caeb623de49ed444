"""Passwords: what a password must be, and argon2id hashes of them.

argon2 costs tens of milliseconds of CPU, so hashing and checking run in a worker thread.
argon2's own errors (a mismatch, a malformed stored hash) end here: :func:`matches` answers
False for them.
"""

from __future__ import annotations

import asyncio
import secrets
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from fleet.errors import UserError

MIN_PASSWORD = 12
MAX_PASSWORD = 1024

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory parameters


def check_password(password: str) -> None:
    """UserError unless ``password`` has MIN_PASSWORD to MAX_PASSWORD characters."""
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password: at least {MIN_PASSWORD} characters expected")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"password: at most {MAX_PASSWORD} characters expected")


async def hash_password(password: str) -> str:
    """argon2id, in a worker thread: a hash costs tens of milliseconds of CPU."""
    return await asyncio.to_thread(_hasher.hash, password)


async def matches(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; ``None`` (no such user) checks against a decoy hash, so
    that answer takes as long. In a worker thread: argon2 costs tens of ms of CPU."""

    def verify() -> bool:
        try:
            return _hasher.verify(password_hash or _decoy_hash(), password)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify) and password_hash is not None


@cache
def _decoy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))

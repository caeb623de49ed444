"""Fetch a bundle over a poor link: resume from where it stopped, bounded retries.

The bytes go to ``<sha256>.part`` in the OTA directory. Every attempt asks for the rest
(``Range: bytes=N-``) of what is already there — also after a ``kill -9``, since the part
file is the only record needed — and a server that answers 200 instead of 206 starts the
file again. Between attempts the agent waits a jittered, growing delay
(:class:`gateway.backoff.Backoff`); after ``attempts`` failures in a row without progress it
gives up with the last reason. The whole file must be ``size`` bytes with SHA-256
``sha256`` before it is renamed to ``<sha256>.tar`` — before its signature is even read.

The transfer runs in a background thread with the standard library's HTTP client, so the
event loop (polling, the control loop) never waits on the network.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.backoff import EQUAL_JITTER, Backoff
from gateway.errors import OtaError

log = logging.getLogger(__name__)
_CHUNK = 64 * 1024


@dataclass
class Transfer:
    """What one download moved: bytes received over the network, attempts made."""

    received: int = 0
    attempts: int = 0
    resumed_from: int = 0  # where the last attempt started


def check_space(directory: Path, needed: int, *, margin: int = 64 * 1024 * 1024) -> None:
    """OtaError unless ``directory``'s file system has ``needed`` bytes and a margin free."""
    free = shutil.disk_usage(directory).free
    if free < needed + margin:
        raise OtaError(
            f"not enough disk space in {directory}: {free // 2**20} MiB free, the update "
            f"needs {(needed + margin) // 2**20} MiB"
        )


async def download(
    url: str,
    token: str,
    size: int,
    sha256: str,
    directory: Path,
    *,
    progress: Callable[[int], None] = lambda done: None,
    attempts: int = 6,
    backoff: Backoff | None = None,
    timeout_s: float = 30.0,
) -> tuple[Path, Transfer]:
    """The verified bundle's path and what the transfer took."""
    final = directory / f"{sha256}.tar"
    transfer = Transfer()
    if final.exists() and final.stat().st_size == size:
        return final, transfer
    part = directory / f"{sha256}.part"
    wait = backoff or Backoff(1.0, 60.0, jitter=EQUAL_JITTER)
    failures = 0
    last = ""
    while True:
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        if have < size:
            transfer.attempts += 1
            transfer.resumed_from = have
            try:
                got = await asyncio.to_thread(
                    _fetch, url, token, part, have, size, progress, timeout_s
                )
            except OtaError:
                raise
            except (OSError, urllib.error.URLError, ValueError) as exc:
                got = getattr(exc, "received", 0)
                last = str(getattr(exc, "reason", None) or exc)
                transfer.received += got
                failures = 0 if got else failures + 1
                if failures >= attempts:
                    raise OtaError(
                        f"download of {url} failed {attempts} times in a row: {last}"
                    ) from None
                if got:
                    wait.reset()
                delay = wait.next()
                log.info(
                    "ota: download stopped at %d/%d bytes (%s); again in %.1f s",
                    part.stat().st_size if part.exists() else 0,
                    size,
                    last,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            transfer.received += got
        digest = await asyncio.to_thread(_sha256, part)
        if digest != sha256:
            part.unlink()
            raise OtaError(
                f"the downloaded bundle's SHA-256 is {digest[:12]}…, the command said "
                f"{sha256[:12]}…: discarded"
            )
        part.replace(final)
        return final, transfer


class _Cut(OSError):
    def __init__(self, message: str, received: int) -> None:
        super().__init__(message)
        self.received = received


def _fetch(
    url: str,
    token: str,
    part: Path,
    have: int,
    size: int,
    progress: Callable[[int], None],
    timeout_s: float,
) -> int:
    request = urllib.request.Request(url)  # noqa: S310 - the fleet's URL from a signed-in broker
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if have:
        request.add_header("Range", f"bytes={have}-")
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310
            mode = "ab"
            if have and answer.status != 206:
                mode, have = "wb", 0  # the server ignored the range: start again
            with part.open(mode) as out:
                while chunk := answer.read(_CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    progress(have + received)
                out.flush()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403, 404):
            raise OtaError(
                f"the fleet refused the download of {url}: {exc.code} {exc.reason}"
            ) from None
        raise _Cut(f"HTTP {exc.code} {exc.reason}", received) from None
    except (OSError, urllib.error.URLError) as exc:
        raise _Cut(str(getattr(exc, "reason", exc)), received) from None
    if have + received < size:
        raise _Cut(f"the connection closed at {have + received} of {size} bytes", received)
    return received


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()

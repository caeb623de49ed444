"""Calling back at a monotonic instant to within tens of microseconds, without spinning.

asyncio's selector takes its timeout in whole milliseconds, rounded up, so ``asyncio.sleep``
and ``loop.call_at`` end up to a millisecond late: at 115200 baud, where a 10-register read
and its two t3.5 gaps take 6.7 ms, that is a sixth of the line. Spinning through the last
stretch keeps the time but costs a core, and a busy neighbour process preempts the spinner
anyway. A Linux timerfd armed at an absolute ``CLOCK_MONOTONIC`` time (the clock of
``time.monotonic()`` and of the loop) becomes readable at that time; the loop watches it like
any other file descriptor and sleeps in the kernel until then.

CPython has ``os.timerfd_*`` from 3.13; before that the two libc calls are made through
ctypes. Without timerfd (not Linux) the timer falls back to ``loop.call_at``: never early,
up to a millisecond late.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Self

_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        libc.timerfd_create.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.timerfd_create.restype = ctypes.c_int
        libc.timerfd_settime.argtypes = (
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.c_void_p,
        )
        libc.timerfd_settime.restype = ctypes.c_int
    except AttributeError:  # a C library without timerfd
        return None
    return libc


_LIBC = _libc()


class PreciseTimer:
    """One pending callback at a time, run by the event loop at a monotonic instant.

    Use it inside the running loop as a context manager; leaving it cancels the callback,
    removes the timer from the loop and closes its file descriptor.
    """

    def __init__(self) -> None:
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._callback: Callable[[], None] | None = None
        self._fallback: asyncio.TimerHandle | None = None
        # one time specification, filled in and handed over by reference on every arming
        self._spec = _Itimerspec()
        self._spec_ref = ctypes.byref(self._spec)
        self._arms = 0  # how often the timerfd was set: arming clears its expiry

    @property
    def precise(self) -> bool:
        """Whether a timerfd keeps the time (else callbacks may run up to 1 ms late)."""
        return self._fd >= 0

    def __enter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        if _LIBC is not None:
            fd = _LIBC.timerfd_create(_CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0:
                self._fd = fd
                self._loop.add_reader(fd, self._on_expired)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()
        if self._fd >= 0:
            assert self._loop is not None
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` once ``time.monotonic() >= when``, replacing any pending one."""
        assert self._loop is not None, "enter the timer before using it"
        if self._fd >= 0:
            self._callback = callback
            self._arm(when)  # replaces any pending expiry: no need to disarm first
            return
        self.cancel()
        self._callback = callback
        self._fallback = self._loop.call_at(when, self._on_expired)

    def cancel(self) -> None:
        if self._callback is None:
            return
        self._callback = None
        if self._fallback is not None:
            self._fallback.cancel()
            self._fallback = None
        elif self._fd >= 0:
            self._arm(0.0)

    def _arm(self, when: float) -> None:
        """Expire at monotonic ``when``; 0 disarms."""
        assert _LIBC is not None
        value = self._spec.it_value
        if when > 0:
            seconds = int(when)
            value.tv_sec = seconds
            # rounded up: expiring a nanosecond early would call back for nothing
            value.tv_nsec = min(999_999_999, int((when - seconds) * 1e9) + 1)
        else:
            value.tv_sec = value.tv_nsec = 0
        self._arms += 1
        if _LIBC.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, self._spec_ref, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")

    def _on_expired(self) -> None:
        self._fallback = None
        callback, self._callback = self._callback, None
        arms = self._arms
        try:
            if callback is not None:
                callback()
        finally:
            # Arming again clears the expiry; otherwise reading its count does.
            if self._fd >= 0 and self._arms == arms:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._fd, 8)

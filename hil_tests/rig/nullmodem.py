"""A pseudo-terminal standing in for a serial cable: the simulator keeps the master side,
the gateway opens the slave by its real ``/dev/pts/N`` path (mpremote and pyserial treat
only ``/dev/pts/*`` as a tty). The slave fd stays open here, so a client closing the port
does not make the master read EIO.
"""

from __future__ import annotations

import contextlib
import os
import tty
from types import TracebackType
from typing import Self


class NullModem:
    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)

    def close(self) -> None:
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

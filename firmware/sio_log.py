"""The board's fault log: one line per event (boot, FAILSAFE, FAULT, maintenance stop),
appended to a file on the board's flash so a technician can read why the board tripped.

Bounded: when the file would grow past ``max_bytes`` it becomes ``<path>.1`` (replacing the
older one) and a new file starts, so the log never takes more than twice ``max_bytes``.
A full or failing filesystem never stops the main loop: the write is counted and dropped.
"""

import os


class FaultLog:
    def __init__(self, path, max_bytes=4096):
        self.path = path
        self.max_bytes = max_bytes
        self.write_errors = 0

    def append(self, uptime_s, event, detail):
        """Add ``<uptime_s> <event> <detail>`` as one line."""
        line = "%d %s %s\n" % (uptime_s, event, detail.replace("\n", " "))
        try:
            size = self._size(self.path)
            if size > 0 and size + len(line) > self.max_bytes:
                self._rotate()
            with open(self.path, "a") as f:
                f.write(line)
        except OSError:
            self.write_errors += 1

    def lines(self):
        """All lines, oldest first (the rotated file, then the current one)."""
        out = []
        for path in (self.path + ".1", self.path):
            try:
                with open(path) as f:
                    out.extend(line for line in f.read().split("\n") if line)
            except OSError:
                pass
        return out

    def _rotate(self):
        old = self.path + ".1"
        if self._size(old) >= 0:
            os.remove(old)
        os.rename(self.path, old)

    @staticmethod
    def _size(path):
        try:
            return os.stat(path)[6]
        except OSError:
            return -1

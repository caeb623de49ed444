"""Debouncing of the hard-wired inputs.

A contact bounces for a few ms when it moves, and a long cable picks up spikes; a bit of the
debounced bitmap follows the raw input only once the raw bit has held its new value for
``stable_ms``. Each bit has its own timer, so a chattering spare input never delays the fire
loop.
"""

from sio_ticks import ticks_diff

DEBOUNCE_MS = 20


class Debouncer:
    def __init__(self, raw, now, stable_ms=DEBOUNCE_MS, nbits=8):
        self.stable = raw  # at boot the first reading is taken as it is
        self.stable_ms = stable_ms
        self._raw = raw
        self._since = [now] * nbits

    def update(self, raw, now):
        """Feed the raw bitmap read at tick ``now``; returns the debounced bitmap."""
        changed = raw ^ self._raw
        self._raw = raw
        pending = raw ^ self.stable
        bit = 0
        while changed or pending:
            if changed & 1:
                self._since[bit] = now
            if pending & 1 and ticks_diff(now, self._since[bit]) >= self.stable_ms:
                self.stable ^= 1 << bit
            changed >>= 1
            pending >>= 1
            bit += 1
        return self.stable

"""Millisecond tick arithmetic that survives the wrap of ``time.ticks_ms()``.

MicroPython's tick counter wraps (at 2**30 on the RP2 port), so intervals are always taken
with ``ticks_diff``. On CPython (host tests, the HIL rig) ``time`` has no ``ticks_diff``
and the same modular arithmetic is done here, so the host board can start its clock just
before a wrap and the firmware logic is tested across it.
"""

import time

TICKS_PERIOD = 1 << 30
TICKS_MAX = TICKS_PERIOD - 1
_HALF = TICKS_PERIOD // 2

try:
    ticks_diff = time.ticks_diff
    ticks_add = time.ticks_add
except AttributeError:

    def ticks_diff(end, start):
        """Signed ``end - start`` in ms, correct across one wrap of the counter."""
        return ((end - start + _HALF) & TICKS_MAX) - _HALF

    def ticks_add(ticks, delta):
        """``ticks + delta`` wrapped into the counter's range."""
        return (ticks + delta) & TICKS_MAX

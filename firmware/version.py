"""Firmware version of the SIO-1 safety I/O controller, reported in IR 1 as major << 8 | minor."""

VERSION = (1, 1)

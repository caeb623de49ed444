"""Boot script of the SIO-1 board: MicroPython runs this file at every reset.

It picks the board layer for the platform, starts the firmware (identity, fault log, boot
self-test) and runs the main loop forever.

Maintenance: the REPL's USB serial stays free for technicians (``gateway flash`` uses
mpremote, which interrupts the program with Ctrl-C). The hardware watchdog cannot be stopped
on the RP2, so an interrupt turns every relay off, notes it in the fault log and leaves a
``maintenance`` flag file; the watchdog then resets the board, and the next boot, seeing the
flag, deletes it and stays in the REPL with all relays off and no watchdog, so mpremote can
work. The boot after that runs the firmware again.
"""

import os
import sys

import sio_app

MAINTENANCE_FLAG = "maintenance"


def board_for_platform():
    """The board layer of the platform this runs on."""
    if sys.platform == "rp2":
        import board_rp2

        return board_rp2.Rp2Board()
    raise RuntimeError("no SIO-1 board layer for platform %s" % sys.platform)


def _take_maintenance_flag():
    try:
        os.remove(MAINTENANCE_FLAG)
    except OSError:
        return False
    return True


def _request_maintenance(firmware):
    firmware.board.write_outputs(0)
    firmware.note("MAINTENANCE", "stopped from the REPL; relays off")
    try:
        with open(MAINTENANCE_FLAG, "w") as f:
            f.write("1")
    except OSError:
        pass
    print("SIO-1 stopped, relays off; the watchdog resets the board into maintenance mode")


def boot():
    board = board_for_platform()
    if _take_maintenance_flag():
        board.write_outputs(0)
        print("SIO-1 maintenance boot: relays off, firmware not started (reset to resume)")
        return
    firmware = sio_app.boot(board)
    try:
        firmware.run()
    except KeyboardInterrupt:
        _request_maintenance(firmware)
    except Exception as exc:
        # A bug: relays off now, the reason in the log; the watchdog resets into BOOT-SAFE.
        board.write_outputs(0)
        firmware.note("CRASH", repr(exc))
        raise


if __name__ == "__main__":
    boot()

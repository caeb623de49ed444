"""The SIO-1 firmware on this host: the real firmware (``firmware/``) run by CPython, in a
thread, on a serial line — the board as the HIL rig sees it.

    from hil_tests.rig import firmware_host
    with NullModem() as line:                      # hil_tests/rig/nullmodem.py
        sio = firmware_host.start(line.master, unit_id=7)
        ...                                         # the gateway opens line.path
        sio.set_input("fire_alarm_loop", False)     # open the fire loop = fire alarm
        sio.stop()

The firmware's modules are flat and import each other by bare name (``import sio_regs``), as
on the board: importing this module puts :data:`FIRMWARE` on ``sys.path``. The board under
the firmware is :class:`hil_tests.rig.host_board.HostBoard`. The firmware's files (identity,
fault log) live in a temporary directory unless ``state_dir`` is given.
"""

import os
import shutil
import sys
import tempfile
import threading
import tty
from pathlib import Path

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))

import sio_app  # noqa: E402  (found on the path set above)
import sio_identity  # noqa: E402
import sio_regs as R  # noqa: E402

from hil_tests.rig.host_board import HEALTHY_INPUTS, HostBoard  # noqa: E402


class FirmwareHandle:
    """A running firmware and its simulated board. Stop it with :meth:`stop` (or ``with``)."""

    def __init__(self, board, identity_path, log_path, options, cleanup):
        self.board = board
        self.identity_path = identity_path
        self.log_path = log_path
        self.error = None  # an exception that ended the firmware thread
        self._options = options
        self._cleanup = cleanup
        self._stop = threading.Event()
        self._thread = None
        self.firmware = None
        self._boot()

    # -- inputs -------------------------------------------------------------------------------

    def set_input(self, name_or_index, closed):
        """Close or open a contact: ``set_input("fire_alarm_loop", False)`` = fire alarm,
        ``set_input("estop", False)`` = e-stop pressed. Debounced by the firmware (20 ms)."""
        self.board.set_input(name_or_index, closed)

    def force_feedback(self, coil, value):
        """Force the feedback contact of coil 0-2 (or its name) to 0/1; ``None`` releases it."""
        self.board.force_feedback(coil, value)

    # -- what the board shows ----------------------------------------------------------------

    @property
    def state(self):
        """IR 4: 0 BOOT-SAFE, 1 CLAIMED, 2 FAILSAFE, 3 FAULT."""
        return self.firmware.ctl.state

    @property
    def state_name(self):
        return R.STATE_NAMES[self.state]

    @property
    def outputs(self):
        """The relays as they are now (bit n = coil n)."""
        return self.board.relays

    @property
    def inputs(self):
        """The debounced input bitmap (IR 7)."""
        return self.firmware.ctl.inputs

    @property
    def failsafe_trips(self):
        return self.firmware.ctl.failsafe_trips

    @property
    def unit_id(self):
        return self.firmware.ctl.unit_id

    def fault_log(self):
        """The fault log's lines, oldest first."""
        return self.firmware.log.lines()

    # -- life cycle -----------------------------------------------------------------------------

    def reset(self, cause=R.RESET_HARD):
        """Reset the board (the only way out of FAULT): relays drop, the firmware boots again in
        BOOT-SAFE with IR 6 = ``cause``. The serial line stays open."""
        self._halt()
        self.board.write_outputs(0)
        self.board.cause = cause
        self._boot()

    def stop(self):
        """Stop the firmware, drop the relays, close what :func:`start` opened."""
        try:
            self._halt()
            self.board.write_outputs(0)
        finally:
            self._cleanup()
        if self.error is not None:
            raise RuntimeError(f"SIO-1 firmware thread failed: {self.error!r}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def _boot(self):
        self.firmware = sio_app.boot(self.board, self.identity_path, self.log_path, **self._options)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sio-firmware", daemon=True)
        self._thread.start()

    def _run(self):
        try:
            self.firmware.run(self._stop.is_set)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def _halt(self):
        self._stop.set()
        self._thread.join(5)
        if self._thread.is_alive():
            raise RuntimeError("SIO-1 firmware thread did not stop within 5 s")


def start(
    port,
    unit_id=None,
    identity=None,
    baudrate=115200,
    inputs=None,
    feedback_delay_ms=20,
    reset_cause=R.RESET_POWER_ON,
    state_dir=None,
    version=None,
):
    """Start the firmware in a thread on ``port`` and return its :class:`FirmwareHandle`.

    ``port``: an open fd (the master of a pty; left open) or a tty path (opened raw here and
    closed by ``stop``). ``identity``: a ``sio_identity.Identity``, the path of an identity
    file (a missing or bad file boots the board into FAULT, as on hardware), or None for a
    host identity with ``unit_id`` (default 1). ``inputs``: initial contact bitmap (default
    fire loop closed, e-stop released). ``version``: the (major, minor) IR 1 answers, for a
    board whose flash holds another release than ``firmware/`` (default: ``firmware/``'s).
    """
    own_dir = state_dir is None
    state_dir = tempfile.mkdtemp(prefix="sio-") if own_dir else state_dir
    opened = []

    def cleanup():
        for fd in opened:
            os.close(fd)
        if own_dir:
            shutil.rmtree(state_dir, ignore_errors=True)

    try:
        identity_path = _identity_path(identity, unit_id, state_dir)
        fd = port
        if not isinstance(port, int):
            fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            opened.append(fd)
            tty.setraw(fd)
        board = HostBoard(
            channel_fd=fd,
            inputs=HEALTHY_INPUTS if inputs is None else inputs,
            feedback_delay_ms=feedback_delay_ms,
            reset_cause=reset_cause,
        )
        log_path = os.path.join(state_dir, sio_app.LOG_PATH)
        options = {"baudrate": baudrate}
        if version is not None:
            options["version"] = tuple(version)
        return FirmwareHandle(board, identity_path, log_path, options, cleanup)
    except BaseException:
        cleanup()
        raise


def _identity_path(identity, unit_id, state_dir):
    """The identity file the firmware boots from, written into ``state_dir`` when needed."""
    if isinstance(identity, (str, os.PathLike)):
        if unit_id is not None:
            raise ValueError(f"unit_id comes from the identity file {identity}; do not pass both")
        return os.fspath(identity)
    if identity is None:
        token = sio_identity.hash_token("host")
        identity = sio_identity.Identity("host", "host", 1 if unit_id is None else unit_id, token)
    elif unit_id is not None and unit_id != identity.unit_id:
        raise ValueError(f"unit_id {unit_id} differs from the identity's {identity.unit_id}")
    path = os.path.join(state_dir, sio_app.IDENTITY_PATH)
    with open(path, "w") as f:
        f.write(identity.render())
    return path

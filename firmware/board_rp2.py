"""The board layer on an RP2040/RP2350 (MicroPython ``rp2`` port).

Wiring (edit the constants for another board revision):
* inputs: dry contacts between GP2..GP9 and GND, internal pull-ups, so a closed contact reads
  0 on the pin and 1 in the DI bitmap (docs/devices.md#sio-1: 1 = contact closed; a broken wire on the
  healthy-closed fire loop and e-stop reads as alarm / pressed);
* outputs: relay drivers on GP10..GP17, high = energised, with pull-downs on the board so a
  resetting or unpowered MCU leaves every relay off; the actual state is read back from the
  pins;
* Modbus data channel: UART0 on GP0 (TX) / GP1 (RX), 115200 8N1, wired to the Pi's UART, or
  (``CHANNEL = "cdc"``) a second USB CDC interface next to the REPL's (MicroPython >= 1.23 with
  micropython-lib ``usb-device-cdc`` installed). Never the REPL's own USB serial.
"""

import select
import time

import machine

import sio_regs as R
from sio_board import Board

INPUT_PINS = (2, 3, 4, 5, 6, 7, 8, 9)
OUTPUT_PINS = (10, 11, 12, 13, 14, 15, 16, 17)
CHANNEL = "uart"
UART_ID = 0
UART_TX = 0
UART_RX = 1
BAUDRATE = 115200
_SEND_MS = 50

_RESET_CAUSES = (
    ("PWRON_RESET", R.RESET_POWER_ON),
    ("HARD_RESET", R.RESET_HARD),
    ("WDT_RESET", R.RESET_WATCHDOG),
    ("SOFT_RESET", R.RESET_SOFT),
)


def _open_channel():
    if CHANNEL == "cdc":
        import usb.device
        from usb.device.cdc import CDCInterface

        cdc = CDCInterface()
        cdc.init(baudrate=BAUDRATE, timeout=0)
        usb.device.get().init(cdc, builtin_driver=True)  # keeps the REPL's CDC for mpremote
        return cdc
    return machine.UART(
        UART_ID,
        baudrate=BAUDRATE,
        tx=machine.Pin(UART_TX),
        rx=machine.Pin(UART_RX),
        timeout=0,
        rxbuf=512,
    )


class Rp2Board(Board):
    def __init__(self):
        self._out = [machine.Pin(n, machine.Pin.OUT, value=0) for n in OUTPUT_PINS]
        self._in = [machine.Pin(n, machine.Pin.IN, machine.Pin.PULL_UP) for n in INPUT_PINS]
        self._channel = _open_channel()
        self._poll = select.poll()
        self._poll.register(self._channel, select.POLLIN)
        self._wdt = None

    def ticks_ms(self):
        return time.ticks_ms()

    def wait(self, ms):
        self._poll.poll(ms)

    def read_inputs(self):
        bits = 0
        for i in range(len(self._in)):
            if not self._in[i].value():  # closed contact pulls the pin low
                bits |= 1 << i
        return bits

    def write_outputs(self, bitmap):
        for i in range(len(self._out)):
            self._out[i].value((bitmap >> i) & 1)

    def read_outputs(self):
        bits = 0
        for i in range(len(self._out)):
            if self._out[i].value():
                bits |= 1 << i
        return bits

    def recv_into(self, buf):
        n = self._channel.readinto(buf)
        return n or 0

    def send(self, data):
        # A peer that stops reading (USB CDC with the port closed) must not stall the loop
        # into a watchdog reset: what is not out within _SEND_MS is dropped.
        view = memoryview(data)
        start = time.ticks_ms()
        while view and time.ticks_diff(time.ticks_ms(), start) < _SEND_MS:
            n = self._channel.write(view)
            if n:
                view = view[n:]

    def wdt_start(self, timeout_ms):
        self._wdt = machine.WDT(timeout=timeout_ms)

    def wdt_feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def reset_cause(self):
        cause = machine.reset_cause()
        for name, ours in _RESET_CAUSES:
            if getattr(machine, name, None) == cause:
                return ours
        return R.RESET_OTHER

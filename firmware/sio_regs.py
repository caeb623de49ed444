"""The SIO-1 register map (docs/devices.md#sio-1) and how each
register is read.

All addresses are 0-based PDU addresses. This module is the one place that says which
number lives where; the state machine (:mod:`sio_state`) owns the values, the PDU layer
(:mod:`sio_pdu`) owns the function codes. ``ctl`` below is a ``sio_state.Controller``.
"""

from version import VERSION

MAP_VERSION = 0x0100

# Table sizes.
N_DISCRETE = 8
N_COILS = 8
N_INPUT = 10
N_HOLDING = 6

# Discrete inputs (FC02), value = contact state, 1 = closed. 0 and 1 are healthy-closed.
INPUT_NAMES = (
    "fire_alarm_loop",
    "estop",
    "charger_feeder_fb",
    "pv_rsd_fb",
    "elv_fire_recall_fb",
    "spare_5",
    "spare_6",
    "spare_7",
)
# Coils (FC01 reads the ACTUAL relays; FC05/15 are refused). Bit n of HR 2 / IR 8 = coil n.
OUTPUT_NAMES = (
    "charger_feeder_enable",
    "pv_rsd_keepalive",
    "elv_fire_recall_req",
    "alarm_sounder",
    "spare_out_4",
    "spare_out_5",
    "spare_out_6",
    "spare_out_7",
)
OUTPUT_MASK = (1 << N_COILS) - 1
# Outputs with a feedback contact: (discrete input, coil).
FEEDBACK = ((2, 0), (3, 1), (4, 2))
#: A feedback input may disagree with its relay this long before the board enters FAULT.
FEEDBACK_FAULT_MS = 500

# Input registers (FC04).
IR_MAP_VERSION = 0
IR_FW_VERSION = 1
IR_UPTIME_HI = 2
IR_UPTIME_LO = 3
IR_STATE = 4
IR_WATCHDOG_REMAINING = 5
IR_RESET_CAUSE = 6
IR_INPUTS = 7
IR_OUTPUTS = 8
IR_FAILSAFE_TRIPS = 9

# Holding registers (FC03/06/16).
HR_HEARTBEAT = 0
HR_WATCHDOG_TIMEOUT = 1
HR_REQUESTED_OUTPUTS = 2
HR_CLAIM = 3
HR_UNIT_ID = 4
HR_HOLD = 5  # seconds the board keeps its outputs without heartbeats (planned restart)

CLAIM_VALUE = 0xC1A1
TIMEOUT_MIN_MS = 100
TIMEOUT_MAX_MS = 10000
TIMEOUT_DEFAULT_MS = 500
HOLD_MAX_S = 30
# The inputs a hold watches itself: fire-alarm loop and emergency stop (healthy closed).
HOLD_INPUTS = 0b11

# IR 4 states.
BOOT_SAFE = 0
CLAIMED = 1
FAILSAFE = 2
FAULT = 3
STATE_NAMES = ("BOOT-SAFE", "CLAIMED", "FAILSAFE", "FAULT")

# IR 6 reset causes.
RESET_POWER_ON = 0
RESET_HARD = 1
RESET_WATCHDOG = 2
RESET_SOFT = 3
RESET_OTHER = 4

# Modbus exception codes.
ILLEGAL_FUNCTION = 1
ILLEGAL_ADDRESS = 2
ILLEGAL_VALUE = 3
DEVICE_FAILURE = 4


def discrete_inputs(ctl):
    """Bitmap of DI 0-7: the debounced inputs."""
    return ctl.inputs


def coils(ctl):
    """Bitmap of coils 0-7: the actual relays, read back from the board (same as IR 8)."""
    return ctl.actual


def input_register(ctl, addr, now):
    """IR ``addr`` (0..9) at tick ``now``."""
    if addr == IR_MAP_VERSION:
        return MAP_VERSION
    if addr == IR_FW_VERSION:
        return ctl.fw_version
    if addr == IR_UPTIME_HI:
        return (ctl.uptime_s >> 16) & 0xFFFF
    if addr == IR_UPTIME_LO:
        return ctl.uptime_s & 0xFFFF
    if addr == IR_STATE:
        return ctl.state
    if addr == IR_WATCHDOG_REMAINING:
        return ctl.remaining_ms(now) // 10
    if addr == IR_RESET_CAUSE:
        return ctl.reset_cause
    if addr == IR_INPUTS:
        return ctl.inputs
    if addr == IR_OUTPUTS:
        return ctl.actual
    return ctl.failsafe_trips


def holding_register(ctl, addr):
    """HR ``addr`` (0..5). HR 3 reads 0xC1A1 while CLAIMED, else 0; HR 5 the hold asked for
    while it lasts, else 0."""
    if addr == HR_HEARTBEAT:
        return ctl.heartbeat
    if addr == HR_WATCHDOG_TIMEOUT:
        return ctl.timeout_ms
    if addr == HR_REQUESTED_OUTPUTS:
        return ctl.requested
    if addr == HR_CLAIM:
        return CLAIM_VALUE if ctl.state == CLAIMED else 0
    if addr == HR_UNIT_ID:
        return ctl.unit_id
    return ctl.hold_s

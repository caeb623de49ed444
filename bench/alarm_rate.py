"""Alarms a person sees per 10 minutes over a scripted day in the life of the example site
(issue 12: ISA-18.2 / EEMUA 191 call more than 10 alarms in 10 minutes for one person a flood).

The example site in the rig's process at a raised priority, ``gateway run`` as its systemd
unit starts it, and the rig's day in the life (:mod:`hil_tests.rig.daylife`: cars, parcels,
elevator rides, clouds over the PV, and a few real faults — an alarm button pressed by
mistake, a locker board that stops answering, an inverter that overheats, a stuck passenger)
played at ``--speed`` (72: a day in 20 minutes, as in the demo) for ``--minutes`` of real
time. From the gateway's alarm journal: the alarms a person sees (raised and not suppressed
under another), all raised alarms (suppressed ones included), the most in any 10 minutes of
the run, and the share of the run's time in flood (more than 10 alarms a person sees in the
10 minutes before). A run shorter than 10 minutes counts its whole length as one window.

    python -m bench.alarm_rate                 # 5 minutes (a quarter of a day)
    python -m bench.alarm_rate --minutes 60    # the full hour: three days

Goal: 0 % of the time in flood.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.report import write_result
from hil_tests.rig import control_channel
from hil_tests.rig.daylife import DEFAULT_SPEED
from hil_tests.site_process import Event, GatewayProcess, SiteProcess

NAME = "alarm_rate"
WINDOW_S = 600.0
FLOOD = 10  # more than this many alarms in a window is a flood


def flood_share(raised_at: list[float], start: float, end: float, step: float = 1.0) -> float:
    """The share of [start, end] in which more than FLOOD alarms fell in the window before."""
    times = sorted(raised_at)
    samples = flooded = 0
    t = start
    while t <= end:
        in_window = bisect.bisect_right(times, t) - bisect.bisect_left(times, t - WINDOW_S)
        flooded += in_window > FLOOD
        samples += 1
        t += step
    return flooded / samples if samples else 0.0


def most_in_a_window(raised_at: list[float]) -> int:
    times = sorted(raised_at)
    return max(
        (bisect.bisect_right(times, t + WINDOW_S) - i for i, t in enumerate(times)), default=0
    )


def _play_day(socket: Path, seed: int, speed: float, lines: list[str]) -> None:
    request = {"scenario": "day", "args": {"seed": seed, "speed": speed}}
    for reply in control_channel.request(socket, request):
        lines.append(str(reply.get("event") or reply.get("ok") or reply.get("error")))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="real minutes to run")
    parser.add_argument("--speed", type=float, default=DEFAULT_SPEED, help="day compression")
    parser.add_argument("--seed", type=int, default=1, help="the day's script")
    args = parser.parse_args(argv)
    seconds = args.minutes * 60
    with (
        tempfile.TemporaryDirectory(prefix="bench-alarms-") as tmp,
        SiteProcess(Path(tmp) / "rig") as site,
        GatewayProcess(site.resolved, Path(tmp) / "state", log_every_s=10) as gw,
    ):
        gw.wait_all_ok()
        lines: list[str] = []
        player = threading.Thread(
            target=_play_day, args=(site.socket, args.seed, args.speed, lines), daemon=True
        )
        start = time.time()
        player.start()
        time.sleep(seconds)
        end = time.time()
        with contextlib.suppress(AssertionError):
            site.scenario("day", clear=True)
        player.join(30)
        events = gw.journal()
        load = os.getloadavg()[0]
    print(f"{len(lines)} day events; the last: {lines[-3:]}", file=sys.stderr)
    raised = [e for e in events if e["kind"] == "raised" and start <= e["at"] <= end]
    seen = [e for e in raised if not e["suppressed_by"]]
    for e in seen:
        print(f"  {time.strftime('%H:%M:%S', time.localtime(e['at']))} {_line(e)}", file=sys.stderr)
    at = [float(e["at"]) for e in seen]
    per_10_min = len(seen) / max(seconds, 1.0) * WINDOW_S
    write_result(
        NAME,
        {
            "minutes": args.minutes,
            "speed": args.speed,
            "day_hours": seconds * args.speed / 3600,
            "alarms_seen": len(seen),
            "alarms_raised_all": len(raised),
            "alarms_seen_per_10_min": per_10_min,
            "most_in_10_min": most_in_a_window(at),
            "flood_share_pct": 100 * flood_share(at, start, end),
            "load": load,
        },
        targets={"flood_share_pct": "== 0 (goal)", "most_in_10_min": "<= 10"},
        units={"day_hours": "simulated hours", "load": "load average at the end"},
    )


def _line(e: Event) -> str:
    return f"{e['severity']} {e['key']}: {e['message']}"


if __name__ == "__main__":
    main()

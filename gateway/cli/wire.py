"""``gateway wire decode``: captured MQTT payloads back into JSON a person can read.

A payload of any kind (state, events, health: JSON already; telemetry in either version) is
printed as indented JSON; several files print as one JSON array, in the order given. A
compact telemetry batch (version 2) names its points through a point map: the map comes
inline in some batches (at the gateway's start and every ``point_map_every_s``), so give
such a batch too — every inline map among the files is learnt before anything is decoded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from gateway.cli.exits import EXIT_BAD_INPUT, EXIT_OK
from gateway.errors import WireError
from gateway.wire import MAX_PAYLOAD, compact

CAPTURE_HINT = "capture one with: mosquitto_sub -N -C 1 -t 'doorstep/v1/SITE/GATEWAY/telemetry'"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``wire`` subcommand to the ``gateway`` command line."""
    p = sub.add_parser(
        "wire",
        help="work with captured wire payloads (decode: to readable JSON)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    what = p.add_subparsers(dest="wire_command", required=True)
    decode = what.add_parser(
        "decode",
        help="turn captured payloads (any kind, either telemetry version) into JSON",
        description=" ".join(__doc__.split("\n\n")[1].split()) if __doc__ else None,
    )
    decode.add_argument(
        "files",
        nargs="*",
        type=Path,
        metavar="FILE",
        help=f"a payload as captured, '-' or none for standard input ({CAPTURE_HINT})",
    )


def run(args: argparse.Namespace, console: Console) -> int:
    """Run ``gateway wire decode``; exit 0, or 2 naming the payload that could not be read
    (``console`` is unused: the output is JSON on standard output, errors on standard
    error)."""
    files: list[Path] = args.files or [Path("-")]
    payloads: list[tuple[str, bytes]] = []
    for path in files:
        try:
            data = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
        except OSError as exc:
            _fail(f"{path}: cannot read it ({exc.strerror})")
            return EXIT_BAD_INPUT
        payloads.append(("standard input" if str(path) == "-" else str(path), data))
    maps = compact.PointMaps()
    for _, data in payloads:  # inline maps first, so the order of the files does not matter
        if compact.is_compact(data):
            with contextlib.suppress(WireError):  # said below, in order
                _readable(data, maps)
    out: list[Any] = []
    for name, data in payloads:
        try:
            out.append(_readable(data, maps))
        except compact.UnknownPointMap as exc:
            _fail(
                f"{name}: batch {exc.seq} refers to point map {exc.map_id}, which none of "
                "the files given carries: add a batch the gateway sent at its start or within "
                "point_map_every_s of this one"
            )
            return EXIT_BAD_INPUT
        except WireError as exc:
            _fail(f"{name}: {exc}")
            return EXIT_BAD_INPUT
    doc = out[0] if len(out) == 1 else out
    sys.stdout.write(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return EXIT_OK


def _fail(message: str) -> None:
    """Errors go to standard error: standard output is the JSON, for a pipe."""
    print(f"✗ {message}", file=sys.stderr)


def _readable(data: bytes, maps: compact.PointMaps) -> Any:
    """One payload as JSON-able data; WireError says why not."""
    if len(data) > MAX_PAYLOAD:
        raise WireError(f"{len(data)} bytes: over the {MAX_PAYLOAD}-byte limit of a payload")
    if compact.is_compact(data):
        try:
            return compact.readable(data, maps)
        except compact.UnknownPointMap:
            raise
        except WireError:
            if not data.endswith(b"\n"):
                raise
            return compact.readable(data[:-1], maps)  # mosquitto_sub without -N adds one
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise WireError(
            "neither JSON nor compact telemetry (which starts with byte 0x02); "
            f"was it captured whole? ({CAPTURE_HINT})"
        ) from None

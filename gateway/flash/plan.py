"""What ``gateway flash`` does to a board's files, in which order: a pure function.

:func:`plan_install` compares the files to install (name → bytes) with the board's (name →
SHA-256, computed on the board) and returns the operations that make them equal:

1. temporaries of an interrupted run that are no use are removed;
2. every new or changed file is copied to ``NAME.tmp`` (and hash-checked there);
3. ``main.py`` is taken out of the way (removed if a new one waits in ``main.py.tmp``, else
   parked there), files of an older release are removed, every file is renamed into place,
   and ``main.py`` comes back last.

So a board loses power or USB at any point with a firmware that is either the old one
untouched (steps 1–2), or no ``main.py`` at all — MicroPython then boots to the REPL with
every relay off — never a mix of old and new modules; and planning again from whatever the
board holds then finishes the job, reusing temporaries that already hold the right bytes.
Files of an older release are told from the board's own (identity, fault log) by the
manifest the previous install left (``previous``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

TMP = ".tmp"
#: The module MicroPython runs at boot: out of the way while files are renamed into place.
ENTRY = "main.py"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Upload:
    """Copy the new content of ``name`` to ``name.tmp`` and check its hash on the board."""

    name: str


@dataclass(frozen=True)
class Rename:
    """Rename ``source`` to ``target``, replacing it (atomic on littlefs)."""

    source: str
    target: str


@dataclass(frozen=True)
class Remove:
    name: str


Op = Upload | Rename | Remove


@dataclass(frozen=True)
class Plan:
    """What to do to the board, in order, and why (for the technician)."""

    ops: tuple[Op, ...]
    new: tuple[str, ...] = ()  # final names not on the board yet
    changed: tuple[str, ...] = ()  # final names whose content differs
    uploads: tuple[str, ...] = ()  # final names copied to their .tmp, in order
    reused: tuple[str, ...] = ()  # final names whose .tmp already holds the new content
    stale: tuple[str, ...] = ()  # temporaries of an interrupted run that are no use
    obsolete: tuple[str, ...] = ()  # files of an older release, or shadowing a new .mpy

    @property
    def up_to_date(self) -> bool:
        return not self.ops


def plan_install(
    local: Mapping[str, bytes],
    board: Mapping[str, str],
    previous: frozenset[str] = frozenset(),
) -> Plan:
    """The operations that make ``board`` (name → SHA-256 hex) hold ``local`` (name → bytes).

    ``previous``: the files the board's manifest says the installed firmware owns; those not
    in ``local`` are removed, as is ``X.py`` when ``X.mpy`` is installed (MicroPython would
    import the ``.py`` first). Nothing else on the board is touched.
    """
    wanted = {name: sha256_hex(data) for name, data in local.items()}
    pending = sorted(name for name in local if board.get(name) != wanted[name])
    reused = [name for name in pending if board.get(name + TMP) == wanted[name]]
    stale = sorted(
        name for name in board if name.endswith(TMP) and name.removesuffix(TMP) not in reused
    )
    obsolete = sorted(
        name
        for name in board
        if not name.endswith(TMP)
        and name not in local
        and (name in previous or (name.endswith(".py") and f"{name[:-3]}.mpy" in local))
    )
    uploads = sorted((n for n in pending if n not in reused), key=lambda n: (n == ENTRY, n))
    ops: list[Op] = [Remove(name) for name in stale]
    ops += [Upload(name) for name in uploads]
    if pending or obsolete:
        ops += _commit(pending, obsolete, entry_on_board=ENTRY in board)
    return Plan(
        ops=tuple(ops),
        new=tuple(n for n in pending if n not in board),
        changed=tuple(n for n in pending if n in board),
        uploads=tuple(uploads),
        reused=tuple(reused),
        stale=tuple(stale),
        obsolete=tuple(obsolete),
    )


def _commit(pending: list[str], obsolete: list[str], *, entry_on_board: bool) -> list[Op]:
    """Removals and renames, with ``main.py`` out of the way from first to last. Obsolete
    files go before the new manifest is in place, so an interruption never forgets them."""
    ops: list[Op] = []
    entry_pending = ENTRY in pending
    if entry_on_board:
        ops.append(Remove(ENTRY) if entry_pending else Rename(ENTRY, ENTRY + TMP))
    ops += [Remove(name) for name in obsolete]
    ops += [Rename(name + TMP, name) for name in pending if name != ENTRY]
    if entry_pending or entry_on_board:
        ops.append(Rename(ENTRY + TMP, ENTRY))
    return ops


def describe(plan: Plan, local: Mapping[str, bytes]) -> list[str]:
    """One line per change, for ``--dry-run`` and before copying."""
    lines = [f"remove {n} (left over by an interrupted run)" for n in plan.stale]
    for name in plan.uploads:
        status = "new" if name in plan.new else "changed"
        lines.append(f"copy {name} ({len(local[name]):,} bytes, {status})")
    lines += [f"install {n} (already copied by an interrupted run)" for n in plan.reused]
    lines += [f"remove {n} (not part of this firmware)" for n in plan.obsolete]
    return lines

"""A site document as data and back: TOML in (:func:`load`), TOML out (:func:`dumps`).

A pushed document is stored as its author wrote it, comments and all. A bulk change merges
data (:mod:`fleet.config.merge`), so its result is written out again by :func:`dumps`:
top-level keys, then each table as ``[table]`` (nested tables as ``[table.sub]``), each array
of tables as ``[[array]]`` items, anything deeper inline. ``tomllib.loads(dumps(d)) == d``.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from typing import Any

from fleet.errors import ConfigRefused

Data = dict[str, Any]

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def load(text: str, source: str) -> Data:
    """The document's data; ConfigRefused naming ``source`` when it is not TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigRefused(source, [f"not valid TOML: {exc}"]) from None


def dumps(data: Data) -> str:
    lines: list[str] = []
    _table(lines, [], data)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(lines: list[str], path: list[str], table: Data) -> None:
    scalars = {k: v for k, v in table.items() if not _is_table(v) and not _is_table_array(v)}
    tables = {k: v for k, v in table.items() if _is_table(v)}
    arrays = {k: v for k, v in table.items() if _is_table_array(v)}
    if path and (scalars or not (tables or arrays)):
        lines += ["", f"[{_path(path)}]"]
    lines += [f"{_key(k)} = {_value(v)}" for k, v in scalars.items()]
    for k, v in tables.items():
        _table(lines, [*path, k], v)
    for k, items in arrays.items():
        for item in items:
            lines += ["", f"[[{_path([*path, k])}]]"]
            lines += [f"{_key(ik)} = {_value(iv)}" for ik, iv in item.items()]


def _is_table(v: object) -> bool:
    return isinstance(v, dict)


def _is_table_array(v: object) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(i, dict) for i in v)


def _path(keys: list[str]) -> str:
    return ".".join(_key(k) for k in keys)


def _key(k: str) -> str:
    return k if _BARE.match(k) else _string(k)


def _string(s: str) -> str:
    out = json.dumps(s, ensure_ascii=False)
    return re.sub("[\x7f]", lambda m: f"\\u{ord(m.group()):04x}", out)


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"{type(v).__name__} has no TOML form")  # dates: not in a site document

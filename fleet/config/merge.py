"""Merging a bulk change (a TOML fragment) into a gateway's document. The rules:

* **Tables merge**: a key of the fragment sets that key; a table in the fragment merges into
  the document's table of that name (created when missing), key by key, at every depth.
* **Arrays of tables match by ``name``**: each item of a fragment's ``[[devices]]`` (or
  ``[[buses]]``, ``[[interlocks]]``) merges into the document's item with the same ``name``,
  or is appended when there is none. An item without a ``name`` is refused.
* **Removing is explicit**: ``_remove = ["key", …]`` in a fragment's table removes those keys
  from the document's table (tables included: ``[safety] _remove = ["export_limit"]``); an
  array item with ``_remove = true`` removes the document's item of that ``name``.
* Anything else (a number, a string, an array of values) replaces the document's value.

A key the fragment does not name is never dropped or changed, and merging the same fragment
twice gives the document of merging it once (property-tested).
"""

from __future__ import annotations

import copy
from typing import Any

from fleet.config.document import Data

REMOVE = "_remove"


class FragmentError(ValueError):
    """A fragment that breaks the rules; the message names its key."""


def merge(document: Data, fragment: Data) -> Data:
    """``document`` with ``fragment`` merged in (neither is changed)."""
    out = copy.deepcopy(document)
    _merge_table(out, fragment, "")
    return out


def _merge_table(target: dict[str, Any], fragment: dict[str, Any], where: str) -> None:
    removals = fragment.get(REMOVE, [])
    if not isinstance(removals, list) or not all(isinstance(k, str) for k in removals):
        raise FragmentError(f"{where}{REMOVE}: expected a list of key names")
    for key in removals:
        target.pop(key, None)
    for key, value in fragment.items():
        if key == REMOVE:
            continue
        at = f"{where}{key}"
        if isinstance(value, dict):
            current = target.get(key)
            if not isinstance(current, dict):
                current = target[key] = {}
            _merge_table(current, value, f"{at}.")
        elif isinstance(value, list) and value and all(isinstance(i, dict) for i in value):
            current = target.get(key)
            if not (isinstance(current, list) and all(isinstance(i, dict) for i in current)):
                current = target[key] = []
            _merge_array(current, value, at)
        else:
            target[key] = copy.deepcopy(value)


def _merge_array(target: list[dict[str, Any]], items: list[dict[str, Any]], where: str) -> None:
    for i, item in enumerate(items):
        name = item.get("name")
        if not isinstance(name, str):
            raise FragmentError(
                f"{where}[{i}].name: an item of an array of tables needs a name to match by"
            )
        at = next((j for j, t in enumerate(target) if t.get("name") == name), None)
        if item.get(REMOVE) is True:
            if at is not None:
                del target[at]
            continue
        if at is None:
            target.append({})
            at = len(target) - 1
        body = {k: v for k, v in item.items() if not (k == REMOVE and v is False)}
        _merge_table(target[at], body, f"{where}[{name}].")

"""The site's own device profiles travel with its document.

On the gateway a site finds its own profiles by file: ``profile_dirs`` (relative to the site
file) and ``MODEL.toml`` next to it. A version in the fleet is a document without a file, so
``fleet config push SITE.toml`` carries them: every site profile found from the file's place
goes into the pushed document as a ``[[profiles]]`` table (the form a document holds its own
profiles in, checked by the same validator), and ``profile_dirs`` is dropped. The author's
text is kept — comments and order — with the tables appended; where that cannot be done
faithfully the document is written out anew (:func:`fleet.config.document.dumps`).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from fleet.config.document import dumps
from gateway.errors import ConfigError
from gateway.site import parse_site

_PROFILE_DIRS = re.compile(r"(?m)^profile_dirs\s*=\s*\[[^\]]*\][ \t]*(#[^\n]*)?\n?")

CARRIED = "# the site's own profiles, carried with the document by `fleet config push`"


def carry_profiles(text: str, path: Path) -> tuple[str, list[str]]:
    """The document of the site file at ``path`` standing on its own, and the models it
    carries. A document that does not validate where it is, or has no profiles found by
    file, is returned as it is (the push then says what is wrong)."""
    try:
        data = tomllib.loads(text)
        site = parse_site(text, str(path), path.parent)
    except (tomllib.TOMLDecodeError, ConfigError):
        return text, []
    inline = data.get("profiles", [])
    inline_models = {p.get("model") for p in inline if isinstance(p, dict)}
    carried = [p for m, p in site.profile_library.site.items() if m not in inline_models]
    if not carried and "profile_dirs" not in data:
        return text, []
    tables = [p.model_dump(mode="json", exclude_none=True) for p in carried]
    expected: dict[str, Any] = {k: v for k, v in data.items() if k != "profile_dirs"}
    if tables or inline:
        expected["profiles"] = [*inline, *tables]
    kept = _PROFILE_DIRS.sub("", text, count=1)
    appended = kept
    if tables:
        appended = kept.rstrip("\n") + f"\n\n{CARRIED}\n" + dumps({"profiles": tables})
    try:
        faithful = tomllib.loads(appended) == expected
    except tomllib.TOMLDecodeError:
        faithful = False
    return (appended if faithful else dumps(expected)), [p.model for p in carried]

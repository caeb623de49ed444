"""Every message the screens show, gathered into each language's catalogue.

Messages come from the templates (``_()``, ``ngettext()``), the pages' Python code, the words
the templates translate by value (roles, severities, spans), and every device profile's
labels, value labels, units and description. ``python -m fleet.i18n.extract`` merges them
into ``fleet/locale/*/LC_MESSAGES/messages.po``: translations already there are kept, a new
message arrives untranslated for the translator, a message no longer used is dropped.
``--check`` only says what is missing (exit status 1), for CI and the tests.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import write_po

from fleet.i18n import DEFAULT, LANGUAGES, babel_locale
from fleet.i18n.catalogue import DOMAIN, po_path, read_catalogue
from fleet.models import Role
from fleet.queries.alarms import SEVERITIES
from gateway.devices.profile import PointType, Profile, available_models, load_profile

FLEET = Path(__file__).resolve().parent.parent
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2)}
#: Words the templates translate by value (``_(role)``), so no extractor sees them.
BY_VALUE = (
    *(role.value for role in Role),
    *SEVERITIES,
    "1h", "6h", "24h", "7d",
)  # fmt: skip


def profile_messages(profile: Profile) -> Iterator[tuple[str, str]]:
    """(message, where) for each word of a profile a person may read."""
    where = f"profile {profile.model}"
    yield profile.description, where
    for p in profile.points:
        yield p.display_name, f"{where}: {p.name}"
        if p.unit:
            yield p.unit, f"{where}: {p.name} (unit)"
        names = p.value_labels or (p.enum if p.type is PointType.ENUM else None) or p.bits or {}
        for value, label in sorted(names.items()):
            yield label, f"{where}: {p.name} = {value}"


def messages() -> Catalog:
    """Every message, as a template catalogue (no translations)."""
    catalog = Catalog(domain=DOMAIN, project="Doorstep fleet", fuzzy=False)
    for directory, method in (
        (FLEET / "web" / "templates", "jinja2.ext:babel_extract"),
        (FLEET / "pages", "python"),
    ):
        pattern = "**.html" if method != "python" else "**.py"
        found = extract_from_dir(
            str(directory),
            method_map=[(pattern, method)],
            options_map={pattern: {"extensions": "jinja2.ext.i18n"}},
            keywords=KEYWORDS,
        )
        for filename, lineno, message, _comments, _context in found:
            catalog.add(message, locations=[(f"{directory.name}/{filename}", lineno)])
    for word in BY_VALUE:
        catalog.add(word, auto_comments=["translated by value in the templates"])
    for model in available_models():
        for message, where in profile_messages(load_profile(model)):
            if message:
                known = catalog.get(message)
                if known is None:
                    catalog.add(message, auto_comments=[where])
                elif where not in known.auto_comments:
                    known.auto_comments.append(where)
    return catalog


def merged(tag: str, template: Catalog) -> Catalog:
    """The language's catalogue with exactly the template's messages, translations kept."""
    catalog = read_catalogue(tag) or Catalog(locale=babel_locale(tag), domain=DOMAIN)
    catalog.update(template, no_fuzzy_matching=True)
    catalog.obsolete.clear()
    return catalog


def missing(tag: str, template: Catalog | None = None) -> list[str]:
    """The messages the language has no (non-fuzzy) translation of."""
    template = template or messages()
    have = read_catalogue(tag)
    out = []
    for message in template:
        if not message.id:
            continue
        found = None if have is None else have.get(message.id)
        if found is None or found.fuzzy or not _translated(found.string):
            out.append(message.id if isinstance(message.id, str) else message.id[0])
    return out


def _translated(string: object) -> bool:
    if isinstance(string, tuple | list):
        return all(string)
    return bool(string)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet.i18n.extract", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only list missing translations")
    args = parser.parse_args(argv)
    template = messages()
    status = 0
    for tag in LANGUAGES:
        if tag == DEFAULT:
            continue  # English is the message ids
        if not args.check:
            catalog = merged(tag, template)  # read before the file is opened for writing
            path = po_path(tag)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as f:
                write_po(f, catalog, width=100, sort_output=True)
        gaps = missing(tag, template)
        for message in gaps:
            print(f"{tag}: untranslated: {message}")
        status = status or (1 if gaps else 0)
    return status


if __name__ == "__main__":
    sys.exit(main())

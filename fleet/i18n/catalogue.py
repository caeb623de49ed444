"""The translations of each language, compiled in memory from its ``.po`` catalogue the
first time the language is used (no ``.mo`` build step: a clean clone runs as it is)."""

from __future__ import annotations

import gettext
from functools import cache
from io import BytesIO
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

from fleet.i18n import LANGUAGES, babel_locale, catalogue_dir

LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
DOMAIN = "messages"


def po_path(tag: str) -> Path:
    return LOCALE_DIR / catalogue_dir(tag) / "LC_MESSAGES" / f"{DOMAIN}.po"


def read_catalogue(tag: str) -> Catalog | None:
    """The language's catalogue as the translator left it, or None (English needs none)."""
    path = po_path(tag)
    if not path.is_file():
        return None
    with path.open("rb") as f:
        return read_po(f, locale=babel_locale(tag), domain=DOMAIN)


@cache
def translations(tag: str) -> gettext.NullTranslations:
    """The language's translations; fuzzy and untranslated entries fall back to English."""
    if tag not in LANGUAGES:
        raise ValueError(f"language {tag!r}: expected one of {', '.join(LANGUAGES)}")
    catalog = read_catalogue(tag)
    if catalog is None:
        return gettext.NullTranslations()
    compiled = BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)

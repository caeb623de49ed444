"""The people's languages: which ones the screens speak, which one a request gets, the
catalogue of translations and locale formats (numbers, dates, ages).

English strings are the message ids (in the templates, and the labels of the gateway's
profiles); each other language has a gettext catalogue a translator edits,
``fleet/locale/<locale>/LC_MESSAGES/messages.po``, read and compiled in memory when first
used, so there is no build step. ``python -m fleet.i18n.extract`` refreshes the catalogues
with every message the templates and the profiles hold. The CLI stays English.
"""

from __future__ import annotations

from typing import Final

#: The languages the screens speak: a BCP 47 tag → its name in itself. The first is the
#: fallback when a browser asks for none of them.
LANGUAGES: Final[dict[str, str]] = {"en": "English", "zh-Hans": "简体中文"}
DEFAULT: Final = "en"


def babel_locale(tag: str) -> str:
    """The Babel (CLDR) locale of a language tag: 'zh-Hans' → 'zh_Hans_CN'."""
    return {"zh-Hans": "zh_Hans_CN"}.get(tag, tag.replace("-", "_"))


def catalogue_dir(tag: str) -> str:
    """The folder name of a language's catalogue under fleet/locale: 'zh-Hans' → 'zh_Hans'."""
    return tag.replace("-", "_")

"""The screens' languages: which one a browser gets, the catalogue, and locale formats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fleet.i18n.catalogue import translations
from fleet.i18n.formats import Formats
from fleet.i18n.negotiate import from_accept_language, language


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-Hans"),
        ("zh-TW", "zh-Hans"),  # our only Chinese
        ("en-GB,en;q=0.9", "en"),
        ("fr-FR,zh;q=0.5,en;q=0.4", "zh-Hans"),  # French we lack: the next choice
        ("en;q=0.2,zh-Hans;q=0.9", "zh-Hans"),  # by q-value, not order
        ("zh;q=0, en", "en"),  # q=0 means "not this"
        ("de", "en"),
        ("", "en"),
        (None, "en"),
        ("*", "en"),
        ("zh;q=abc,en", "en"),  # a malformed q counts as 0
    ],
)
def test_a_browser_gets_the_language_it_asks_for(header: str | None, expected: str) -> None:
    assert from_accept_language(header) == expected


def test_only_our_languages_are_stored_or_chosen() -> None:
    assert language("zh-Hans") == "zh-Hans"
    assert language("en") == "en"
    assert language("xx") is None
    assert language(None) is None


def test_the_chinese_catalogue_translates_and_english_is_the_message_itself() -> None:
    assert translations("zh-Hans").gettext("Acknowledge") == "确认"
    assert translations("zh-Hans").gettext("Fire alarm loop") == "火灾报警回路"
    assert translations("en").gettext("Acknowledge") == "Acknowledge"
    assert translations("zh-Hans").gettext("a message nobody translated") == (
        "a message nobody translated"
    )
    with pytest.raises(ValueError, match="expected one of en, zh-Hans"):
        translations("fr")


def test_numbers_and_times_are_written_as_each_language_writes_them() -> None:
    en, zh = Formats("en"), Formats("zh-Hans")
    assert en.number(-1234.5) == "-1,234.5"
    assert en.number(16.0) == "16"
    assert en.number(3.14159) == "3.14"
    assert en.number(21735, 1) == "21,735.0"
    assert zh.number(1234.5) == "1,234.5"
    at = datetime(2026, 12, 5, 5, 16, 53, tzinfo=UTC)
    assert en.since(at, at + timedelta(seconds=3)) == "3 sec. ago"
    assert en.since(at, at + timedelta(seconds=95)) == "2 min. ago"
    assert zh.since(at, at + timedelta(seconds=3)) == "3秒前"
    assert zh.since(at, at + timedelta(hours=3)) == "3小时前"
    assert "2026年12月5日" in zh.datetime(at)
    assert "Dec 5, 2026" in en.datetime(at)

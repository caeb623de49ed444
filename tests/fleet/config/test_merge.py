"""The bulk-change merge rules and the TOML writer, by example and by property."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.config import document
from fleet.config.checks import validate
from fleet.config.merge import REMOVE, FragmentError, merge

EXAMPLE = (Path(__file__).parents[3] / "gateway" / "examples" / "community.toml").read_text()
BASE = tomllib.loads(EXAMPLE)


def test_tables_merge_arrays_match_by_name_and_removal_is_explicit() -> None:
    fragment = tomllib.loads(
        """
        [safety.export_limit]
        limit_w = 3000
        [safety]
        _remove = ["pv_faults"]
        [[devices]]
        name = "charger-1"
        min_gap_ms = 20
        [[devices]]
        name = "charger-4"
        _remove = true
        """
    )
    merged = merge(BASE, fragment)
    assert merged["safety"]["export_limit"] == {**BASE["safety"]["export_limit"], "limit_w": 3000}
    assert "pv_faults" not in merged["safety"]
    assert merged["safety"]["fire_alarm"] == BASE["safety"]["fire_alarm"]
    charger = next(d for d in merged["devices"] if d["name"] == "charger-1")
    assert charger == {
        **next(d for d in BASE["devices"] if d["name"] == "charger-1"),
        "min_gap_ms": 20,
    }
    assert [d["name"] for d in merged["devices"]] == [
        d["name"] for d in BASE["devices"] if d["name"] != "charger-4"
    ]
    assert tomllib.loads(EXAMPLE) == BASE  # the document itself is not changed


def test_an_array_item_without_a_name_is_refused_naming_the_key() -> None:
    with pytest.raises(FragmentError, match=r"devices\[0\]\.name"):
        merge(BASE, {"devices": [{"unit_id": 3}]})


def test_the_merged_example_is_written_out_and_still_validates() -> None:
    merged = merge(BASE, {"safety": {"export_limit": {"limit_w": 4000}}})
    text = document.dumps(merged)
    assert tomllib.loads(text) == merged
    site, problems = validate(text, "merged", "lianhua-garden", "gw-01")
    assert problems == []
    assert site is not None


# -- properties ------------------------------------------------------------------------------

keys = st.sampled_from(["a", "b", "c", "limit_w", "name", "x-y", "with space"])
scalars = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(max_size=8),
)
names = st.sampled_from(["n1", "n2", "n3"])


def tables(depth: int = 2) -> st.SearchStrategy[dict[str, Any]]:
    values: st.SearchStrategy[Any] = scalars | st.lists(scalars, max_size=3)
    if depth > 0:
        values = values | tables(depth - 1) | named_arrays(depth - 1)
    return st.dictionaries(keys.filter(lambda k: k != "name"), values, max_size=4)


def named_arrays(depth: int) -> st.SearchStrategy[list[dict[str, Any]]]:
    item = st.builds(
        lambda n, body: {"name": n, **body},
        names,
        tables(depth)
        if depth > 0
        else st.dictionaries(st.sampled_from(["p", "q"]), scalars, max_size=2),
    )
    return st.lists(item, min_size=1, max_size=3, unique_by=lambda d: d["name"])


def fragments() -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda body, removals: {**body, **({REMOVE: removals} if removals else {})},
        tables(2),
        st.lists(keys, max_size=2),
    )


@settings(max_examples=150, deadline=None)
@given(tables(2), fragments())
def test_merging_twice_is_merging_once(doc: dict[str, Any], fragment: dict[str, Any]) -> None:
    once = merge(doc, fragment)
    assert merge(once, fragment) == once


@settings(max_examples=150, deadline=None)
@given(tables(2), fragments())
def test_keys_the_fragment_does_not_name_are_kept_as_they_were(
    doc: dict[str, Any], fragment: dict[str, Any]
) -> None:
    merged = merge(doc, fragment)
    named = set(fragment) | set(fragment.get(REMOVE, []))
    for key, value in doc.items():
        if key not in named:
            assert merged[key] == value


@settings(max_examples=100, deadline=None)
@given(tables(2))
def test_written_documents_read_back_the_same(doc: dict[str, Any]) -> None:
    assert tomllib.loads(document.dumps(doc)) == doc


edits = st.fixed_dictionaries(
    {},
    optional={
        "safety": st.fixed_dictionaries(
            {},
            optional={
                "export_limit": st.fixed_dictionaries(
                    {}, optional={"limit_w": st.integers(-10, 10**6) | st.text(max_size=3)}
                ),
                REMOVE: st.lists(st.sampled_from(["pv_faults", "comm_loss", "fire_alarm"])),
            },
        ),
        "control": st.fixed_dictionaries(
            {}, optional={"period_ms": st.integers(0, 2000), "typo_ms": st.integers()}
        ),
        "devices": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["charger-1", "charger-9", "pv"])},
                optional={"unit_id": st.integers(-1, 300), "_remove": st.booleans()},
            ),
            max_size=2,
            unique_by=lambda d: d["name"],
        ),
    },
)


@settings(max_examples=60, deadline=None)
@given(edits)
def test_a_merged_document_validates_or_is_refused_with_messages(
    fragment: dict[str, Any],
) -> None:
    merged = merge(BASE, fragment)
    site, problems = validate(document.dumps(merged), "merged", "lianhua-garden", "gw-01")
    assert (site is None) == bool(problems)
    assert all(isinstance(p, str) and p for p in problems)

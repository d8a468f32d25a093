"""The fixture index: every captured format names its source, and section G is reproduced whole."""

from __future__ import annotations

import pytest

from tests.captured import FIXTURES, INDEX, SECTION_G_ROWS, index, shape_mismatches

VENUES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


@pytest.mark.parametrize("venue", VENUES)
def test_every_fixture_is_indexed_with_its_source(venue: str) -> None:
    files = {p.name for p in (FIXTURES / venue).iterdir() if p.name != INDEX}
    entries = index(venue)
    assert files == set(entries), "fixtures and index.json disagree"
    for name, entry in entries.items():
        assert entry.source.strip() and entry.what.strip(), name
        assert set(entry.rows) <= set(SECTION_G_ROWS), name


def test_every_section_g_row_has_a_fixture() -> None:
    reproduced = {row for venue in VENUES for entry in index(venue).values() for row in entry.rows}
    assert reproduced == set(SECTION_G_ROWS)


def test_shape_comparison_tells_names_types_and_wrappers_apart() -> None:
    capture = {"error": {"code": 2, "msg": "x"}, "id": 3, "list": [{"a": 1}, {"b": "s"}]}
    assert not shape_mismatches(
        capture, {"error": {"code": 5, "msg": "y"}, "id": 9, "list": [{"b": "t"}]}
    )
    assert shape_mismatches(capture, {"code": 2, "msg": "x"})  # unwrapped
    assert shape_mismatches(capture, {**capture, "id": "3"})  # a string id
    assert shape_mismatches({"usd": 111813}, {"usd": 111813.0})  # integer vs float
    assert shape_mismatches(capture, {**capture, "list": [{"c": 1}]})  # unknown element
    assert shape_mismatches(capture, {**capture, "list": []})  # emptied

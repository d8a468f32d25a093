"""ETag derivation and If-None-Match evaluation."""

# pylint: disable=missing-function-docstring

from __future__ import annotations

import pytest

from ratesvc.api.etag import etag_for, none_match, opaque_tags

TAG = etag_for(b'{"exchanger":"binance","courses":[]}')


def test_etag_is_strong_quoted_and_depends_on_the_body_only() -> None:
    assert TAG.startswith('"') and TAG.endswith('"') and not TAG.startswith("W/")
    assert etag_for(b'{"exchanger":"binance","courses":[]}') == TAG
    assert etag_for(b'{"exchanger":"coingecko","courses":[]}') != TAG


@pytest.mark.parametrize(
    "header",
    [
        TAG,
        f"W/{TAG}",
        f'"other", {TAG}',
        f'"other",{TAG}',
        f' W/"a,b" , W/{TAG} ',
        "*",
        " * ",
    ],
)
def test_if_none_match_matches(header: str) -> None:
    assert none_match([header], TAG)


@pytest.mark.parametrize(
    "header", ['"other"', 'W/"other"', "", "garbage", TAG[:-1], f"{TAG[1:-1]}", '"a", *']
)
def test_if_none_match_does_not_match(header: str) -> None:
    assert not none_match([header], TAG)


def test_if_none_match_field_lines_combine() -> None:
    assert none_match(['"a"', f"W/{TAG}"], TAG)
    assert not none_match([], TAG)


def test_opaque_tags_keep_commas_inside_quotes() -> None:
    assert opaque_tags('"a,b", W/"c"') == (False, ['"a,b"', '"c"'])
    assert opaque_tags("*") == (True, [])

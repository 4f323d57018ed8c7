"""The checks of a search request that need no I/O: query text, top_k, filter,
threshold and SearchMulti's collection ids."""

from __future__ import annotations

import math

import pytest

from indexer.domain.search_request import (
    DEFAULT_TOP_K,
    MAX_FILTER_IDS,
    MAX_QUERY_CHARS,
    collection_ids,
    search_query,
)
from kit.errors import InvalidArgument


def _field_of(error: pytest.ExceptionInfo[InvalidArgument]) -> str:
    assert error.value.reason == "INVALID_ARGUMENT"
    assert [v.field for v in error.value.field_violations] == [error.value.metadata["field"]]
    return error.value.metadata["field"]


def test_top_k_defaults_caps_and_refuses_negative() -> None:
    assert search_query("q", 0, 100).top_k == DEFAULT_TOP_K
    assert search_query("q", 7, 100).top_k == 7
    assert search_query("q", 1000, 100).top_k == 100
    with pytest.raises(InvalidArgument) as error:
        search_query("q", -1, 100)
    assert _field_of(error) == "top_k"


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "x" * (MAX_QUERY_CHARS + 1)])
def test_blank_or_huge_query_is_refused(text: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        search_query(text, 10, 100)
    assert _field_of(error) == "query"


def test_threshold_must_be_finite() -> None:
    assert search_query("q", 1, 10, score_threshold=0.25).score_threshold == 0.25
    assert search_query("q", 1, 10).score_threshold is None
    for bad in (math.nan, math.inf):
        with pytest.raises(InvalidArgument) as error:
            search_query("q", 1, 10, score_threshold=bad)
        assert _field_of(error) == "score_threshold"


def test_filter_becomes_a_payload_filter_of_distinct_ids() -> None:
    query = search_query("q", 1, 10, source_ids=["s1", "s2", "s1"], document_ids=["d1"])
    assert query.filter.payload_filter() == {"source_id": ["s1", "s2"], "document_id": ["d1"]}
    assert search_query("q", 1, 10).filter.payload_filter() == {}
    with pytest.raises(InvalidArgument) as error:
        search_query("q", 1, 10, source_ids=[""])
    assert _field_of(error) == "filter.source_ids"
    many = [f"d{i}" for i in range(MAX_FILTER_IDS + 1)]
    with pytest.raises(InvalidArgument) as error:
        search_query("q", 1, 10, document_ids=many)
    assert _field_of(error) == "filter.document_ids"


def test_collection_ids_collapse_duplicates_in_order_and_are_bounded() -> None:
    assert collection_ids(["b", "a", "b", "a", "c"], 3) == ["b", "a", "c"]
    for bad in ([], [""], ["a", "b", "c", "d"]):
        with pytest.raises(InvalidArgument) as error:
            collection_ids(bad, 3)
        assert _field_of(error) == "collection_ids"

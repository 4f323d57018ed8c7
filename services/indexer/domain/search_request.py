"""What a search asks for, checked: the rules of SearchRequest and SearchMultiRequest
that need no I/O (query text, top_k, filter, threshold, collection ids).

Bad input is INVALID_ARGUMENT with a ``BadRequest`` field violation naming the
field, as the API conventions ask.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from indexer.domain.fields import invalid_field

DEFAULT_TOP_K = 10
# Longer queries are refused rather than silently cut: the embedder would
# truncate them to the model's tokens anyway, and no one types this much.
MAX_QUERY_CHARS = 10_000
# Ids in one filter: enough for any hand-made restriction, bounded so a filter
# cannot become a denial of service on the vector store.
MAX_FILTER_IDS = 1_000


@dataclass(frozen=True)
class SearchFilter:
    source_ids: tuple[str, ...] = ()
    document_ids: tuple[str, ...] = ()

    def payload_filter(self) -> dict[str, list[str]]:
        """The vector store's payload filter (empty: everything)."""
        conditions: dict[str, list[str]] = {}
        if self.source_ids:
            conditions["source_id"] = list(self.source_ids)
        if self.document_ids:
            conditions["document_id"] = list(self.document_ids)
        return conditions


@dataclass(frozen=True)
class SearchQuery:
    """One search, valid: the text, how many hits, and what to keep."""

    text: str
    top_k: int
    filter: SearchFilter = SearchFilter()
    score_threshold: float | None = None
    with_text: bool = False


def search_query(
    text: str,
    top_k: int,
    max_top_k: int,
    *,
    source_ids: Sequence[str] = (),
    document_ids: Sequence[str] = (),
    score_threshold: float | None = None,
    with_text: bool = False,
) -> SearchQuery:
    """The checked query. ``top_k`` 0 means the default; above ``max_top_k`` it is
    served as ``max_top_k`` (like a page size); negative is refused."""
    if not text.strip():
        raise invalid_field("query", "is required and must not be blank")
    if len(text) > MAX_QUERY_CHARS:
        raise invalid_field("query", f"must be at most {MAX_QUERY_CHARS} characters")
    if top_k < 0:
        raise invalid_field("top_k", "must not be negative")
    if score_threshold is not None and not math.isfinite(score_threshold):
        raise invalid_field("score_threshold", "must be a finite number")
    return SearchQuery(
        text=text,
        top_k=min(top_k or DEFAULT_TOP_K, max_top_k),
        filter=SearchFilter(
            source_ids=_filter_ids("filter.source_ids", source_ids),
            document_ids=_filter_ids("filter.document_ids", document_ids),
        ),
        score_threshold=score_threshold,
        with_text=with_text,
    )


def collection_ids(ids: Iterable[str], max_collections: int) -> list[str]:
    """SearchMulti's collections: duplicates collapse (first occurrence kept), at
    least one, at most ``max_collections`` distinct."""
    distinct = list(dict.fromkeys(ids))
    if not distinct:
        raise invalid_field("collection_ids", "must name at least one collection")
    if any(not cid for cid in distinct):
        raise invalid_field("collection_ids", "must not contain an empty id")
    if len(distinct) > max_collections:
        raise invalid_field("collection_ids", f"must name at most {max_collections} collections")
    return distinct


def _filter_ids(field: str, ids: Sequence[str]) -> tuple[str, ...]:
    distinct = tuple(dict.fromkeys(ids))
    if len(distinct) > MAX_FILTER_IDS:
        raise invalid_field(field, f"must hold at most {MAX_FILTER_IDS} ids")
    if any(not value for value in distinct):
        raise invalid_field(field, "must not contain an empty id")
    return distinct

"""The google.longrunning ListOperations filter: any subset of collection_id,
type and status joined by AND; anything else is refused, never ignored."""

from __future__ import annotations

import pytest

from kit.errors import InvalidArgument
from orchestrator.domain.operation_filter import OperationFilter, parse_filter
from orchestrator.domain.operations import OperationStatus, OperationType


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", OperationFilter()),
        ("   ", OperationFilter()),
        (
            'collection_id="c-1" AND type=REINDEX AND status=PROCESSING',
            OperationFilter("c-1", (OperationType.REINDEX,), (OperationStatus.PROCESSING,)),
        ),
        ("status = FAILED", OperationFilter(statuses=(OperationStatus.FAILED,))),
        ("type=OPERATION_TYPE_DELETE", OperationFilter(types=(OperationType.DELETE,))),
        ("collection_id=abc", OperationFilter(collection_id="abc")),
        ('collection_id="has AND inside"', OperationFilter(collection_id="has AND inside")),
    ],
)
def test_accepted_filters(text: str, expected: OperationFilter) -> None:
    assert parse_filter(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "type=NOPE",
        "status=done",
        "owner=alice",
        "type=INDEX AND",
        "type=INDEX OR status=FAILED",
        "type=INDEX status=FAILED",
        "type=INDEX AND type=APPEND",
        "type INDEX",
        'collection_id="unterminated',
    ],
)
def test_refused_filters_name_the_filter_field(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_filter(text)
    assert caught.value.reason == "INVALID_ARGUMENT"
    assert caught.value.metadata == {"field": "filter"}

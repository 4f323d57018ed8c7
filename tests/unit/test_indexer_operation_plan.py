"""The indexer's operation plan: steps per type, when a step changes the
collection, error types of domain errors and of raised exceptions, percent and
the usage an ended operation changed."""

from __future__ import annotations

import asyncpg
import nats.errors
import pytest

from indexer.domain.operation_plan import (
    CollectionFigures,
    UsageChange,
    collections_delta,
    error_type_for,
    percent,
    usage_change,
)
from indexer.operation_failures import failure_of, is_transient
from indexer.operations import runs, steps_for
from kit.errors import InvalidArgument, NotFound, Unavailable
from kit.operation_protocol import STEPS, ErrorType, OperationType, changes_collection


def test_each_runnable_type_has_the_documented_steps_in_order() -> None:
    for kind in OperationType:
        assert runs(kind)
        assert tuple(name for name, _ in steps_for(kind)) == STEPS[kind]
    assert STEPS[OperationType.INDEX] == ("create_collection", "ingest", "finalize")
    assert STEPS[OperationType.DELETE] == ("remove_alias", "drop_collections", "finalize")


def test_a_step_changes_the_collection_from_the_first_writing_step_on() -> None:
    assert not changes_collection(OperationType.APPEND, "scan")
    assert changes_collection(OperationType.APPEND, "ingest")
    assert changes_collection(OperationType.APPEND, "finalize")
    assert changes_collection(OperationType.INDEX, "create_collection")
    assert changes_collection(OperationType.REMOVE_SOURCE, "remove_points")
    assert changes_collection(OperationType.DELETE, "remove_alias")


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("INVALID_SOURCE_PATH", ErrorType.INVALID_SOURCE_PATH),
        ("UNKNOWN_MODEL", ErrorType.UNKNOWN_MODEL),
        ("EMBEDDER_UNAVAILABLE", ErrorType.EMBEDDER_UNAVAILABLE),
        ("QUOTA_EXCEEDED", ErrorType.QUOTA_EXCEEDED),
        ("VECTOR_COLLECTION_CONFLICT", ErrorType.VECTOR_STORE_ERROR),
        ("INVALID_CONFIG", ErrorType.HANDLER_ERROR),
        ("", ErrorType.HANDLER_ERROR),
        (None, ErrorType.HANDLER_ERROR),
    ],
)
def test_error_types_of_reasons(reason: str | None, expected: ErrorType) -> None:
    assert error_type_for(reason) is expected


def test_percent_weighs_each_step_the_same_and_stays_in_bounds() -> None:
    assert percent(1, 3, 0.0) == 0.0
    assert percent(2, 3, 0.5) == 50.0
    assert percent(3, 3, 1.0) == 100.0
    assert percent(3, 3, 7.0) == 100.0  # a fraction past 1 is clamped
    assert percent(1, 4, -1.0) == 0.0
    assert percent(1, 0, 0.5) == 0.0


def test_usage_delta_is_after_minus_before() -> None:
    before = CollectionFigures(documents=5, vectors=40, bytes=1000)
    after = CollectionFigures(documents=3, vectors=10, bytes=600)
    assert after.minus(before) == CollectionFigures(-2, -30, -400)
    assert after.minus(after).is_zero
    assert not after.minus(before).is_zero


def test_infrastructure_errors_are_transient_and_step_errors_are_not() -> None:
    assert is_transient(asyncpg.exceptions.ConnectionDoesNotExistError("gone"))
    # A connection a SIGKILLed Postgres dropped mid-call, once it is back.
    assert is_transient(asyncpg.exceptions.InternalClientError("another operation in progress"))
    assert is_transient(asyncpg.exceptions.CannotConnectNowError("starting up"))
    assert is_transient(nats.errors.ConnectionClosedError())
    assert is_transient(TimeoutError())
    assert is_transient(Unavailable("nats away", reason="BACKEND_UNAVAILABLE"))
    assert not is_transient(Unavailable("no embedder", reason="EMBEDDER_UNAVAILABLE"))
    assert not is_transient(InvalidArgument("bad path", reason="INVALID_SOURCE_PATH"))
    assert not is_transient(ValueError("a bug"))
    assert not is_transient(FileNotFoundError("a source file gone"))


def test_failures_carry_their_type_and_a_sanitised_message() -> None:
    escape = failure_of(
        InvalidArgument("source path '/home/alice/x' is outside", reason="INVALID_SOURCE_PATH")
    )
    assert escape.type is ErrorType.INVALID_SOURCE_PATH
    assert "alice" not in escape.message and "<home>" in escape.message
    assert not escape.retryable
    model = failure_of(NotFound("unknown model 'x'", reason="UNKNOWN_MODEL"))
    assert model.type is ErrorType.UNKNOWN_MODEL
    embedder = failure_of(Unavailable("no embedder answered", reason="EMBEDDER_UNAVAILABLE"))
    assert embedder.type is ErrorType.EMBEDDER_UNAVAILABLE and embedder.retryable
    unreadable = failure_of(PermissionError(13, "Permission denied", "/home/bob/docs"))
    assert unreadable.type is ErrorType.SOURCE_UNREADABLE
    assert "bob" not in unreadable.message
    bug = failure_of(KeyError("physical_collection"))
    assert bug.type is ErrorType.HANDLER_ERROR and "KeyError" in bug.message


def test_a_collection_counts_from_its_index_until_a_delete_completes() -> None:
    for completed in (True, False):  # failed or cancelled: an ERROR collection holds its name
        assert collections_delta(OperationType.INDEX, completed) == 1
    assert collections_delta(OperationType.DELETE, True) == -1
    assert collections_delta(OperationType.DELETE, False) == 0  # the collection is still there
    for kind in (OperationType.APPEND, OperationType.REMOVE_SOURCE, OperationType.REINDEX):
        for completed in (True, False):
            assert collections_delta(kind, completed) == 0


def test_the_usage_change_counts_what_was_stored_on_every_outcome() -> None:
    before = CollectionFigures(documents=5, vectors=40, bytes=1000)
    half_appended = CollectionFigures(documents=7, vectors=55, bytes=1300)
    failed_append = usage_change(OperationType.APPEND, False, before, half_appended)
    assert failed_append == UsageChange(0, CollectionFigures(2, 15, 300))
    assert not failed_append.is_zero
    emptied = CollectionFigures()
    assert usage_change(OperationType.DELETE, True, before, emptied) == UsageChange(
        -1, CollectionFigures(-5, -40, -1000)
    )
    failed_index = usage_change(OperationType.INDEX, False, emptied, emptied)
    assert failed_index == UsageChange(1, CollectionFigures()) and not failed_index.is_zero
    unchanged = usage_change(OperationType.REINDEX, False, before, before)
    assert unchanged.is_zero  # nothing to tell the resources service
